import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Process memory and I/O counters from /proc (Linux). Each function returns undefined where
 * the file or field does not exist, so callers on other systems degrade to "unknown".
 */

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Bytes this process caused to be fetched from storage (/proc/self/io `read_bytes`). */
export function diskReadBytes(): number | undefined {
  const m = /^read_bytes:\s*(\d+)/m.exec(readProc('/proc/self/io') ?? '');
  return m ? Number(m[1]) : undefined;
}

export interface MemoryStatus {
  /** Resident set size (VmRSS). */
  rss: number;
  /** Peak resident set size since start or the last {@link resetPeakRss} (VmHWM). */
  peakRss: number;
  /** Resident pages backed by files, i.e. mapped weights (RssFile). */
  rssFile: number;
  /** Resident anonymous memory: heaps, SharedArrayBuffers from the pread fallback (RssAnon). */
  rssAnon: number;
}

/** VmRSS / VmHWM / RssFile / RssAnon from /proc/self/status, in bytes. */
export function memoryStatus(): MemoryStatus | undefined {
  const s = readProc('/proc/self/status');
  if (s === undefined) return undefined;
  const kb = (name: string): number => {
    const m = new RegExp(`^${name}:\\s*(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rss: kb('VmRSS'), peakRss: kb('VmHWM'), rssFile: kb('RssFile'), rssAnon: kb('RssAnon') };
}

/** Reset VmHWM to the current RSS (writes 5 to /proc/self/clear_refs); false if not allowed. */
export function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}
