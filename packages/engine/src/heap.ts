/**
 * A binary min-heap of merge candidates for the tokenizers: ordered by `key`, then by
 * `position` (so among equal keys the leftmost pair comes first), with the merged token's id
 * and the versions of both nodes when the candidate was made. Parallel typed arrays, no
 * per-entry objects.
 */
export class MinHeap {
  #key = new Float64Array(64);
  #pos = new Int32Array(64);
  #id = new Int32Array(64);
  #v1 = new Int32Array(64);
  #v2 = new Int32Array(64);
  #n = 0;

  get size(): number {
    return this.#n;
  }

  push(key: number, position: number, id: number, leftVersion: number, rightVersion: number): void {
    if (this.#n === this.#key.length) this.#grow();
    let i = this.#n++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(key, position, parent)) break;
      this.#move(parent, i);
      i = parent;
    }
    this.#set(i, key, position, id, leftVersion, rightVersion);
  }

  /** Remove and return the smallest entry (the heap must not be empty). */
  pop(): { key: number; position: number; id: number; leftVersion: number; rightVersion: number } {
    const top = { key: this.#key[0]!, position: this.#pos[0]!, id: this.#id[0]!, leftVersion: this.#v1[0]!, rightVersion: this.#v2[0]! };
    const last = --this.#n;
    if (last > 0) {
      const key = this.#key[last]!;
      const pos = this.#pos[last]!;
      const id = this.#id[last]!;
      const v1 = this.#v1[last]!;
      const v2 = this.#v2[last]!;
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= last) break;
        if (child + 1 < last && this.#lessAt(child + 1, child)) child++;
        if (!this.#lessAt2(child, key, pos)) break;
        this.#move(child, i);
        i = child;
      }
      this.#set(i, key, pos, id, v1, v2);
    }
    return top;
  }

  /** (key, position) < entry j */
  #less(key: number, position: number, j: number): boolean {
    const k = this.#key[j]!;
    return key < k || (key === k && position < this.#pos[j]!);
  }

  /** entry i < entry j */
  #lessAt(i: number, j: number): boolean {
    return this.#less(this.#key[i]!, this.#pos[i]!, j);
  }

  /** entry i < (key, position) */
  #lessAt2(i: number, key: number, position: number): boolean {
    const k = this.#key[i]!;
    return k < key || (k === key && this.#pos[i]! < position);
  }

  #move(from: number, to: number): void {
    this.#set(to, this.#key[from]!, this.#pos[from]!, this.#id[from]!, this.#v1[from]!, this.#v2[from]!);
  }

  #set(i: number, key: number, pos: number, id: number, v1: number, v2: number): void {
    this.#key[i] = key;
    this.#pos[i] = pos;
    this.#id[i] = id;
    this.#v1[i] = v1;
    this.#v2[i] = v2;
  }

  #grow(): void {
    const n = this.#key.length * 2;
    const grow = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.#key = grow(this.#key, (m) => new Float64Array(m));
    this.#pos = grow(this.#pos, (m) => new Int32Array(m));
    this.#id = grow(this.#id, (m) => new Int32Array(m));
    this.#v1 = grow(this.#v1, (m) => new Int32Array(m));
    this.#v2 = grow(this.#v2, (m) => new Int32Array(m));
  }
}
