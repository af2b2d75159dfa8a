// airllm_loader: map a file read-only into an external SharedArrayBuffer.
//
// Why the V8 API and not N-API: N-API can wrap external memory in an ArrayBuffer, but not in a
// SharedArrayBuffer, and only a SharedArrayBuffer can be posted to worker threads without a
// copy. The addon is therefore rebuilt per Node major by node-gyp at install.
//
// Lifetime: the mapping belongs to its V8 backing store. Every SharedArrayBuffer posted to a
// worker shares that backing store, and V8 runs our deleter (munmap) once, when the last
// reference in any isolate is collected. `close()` never unmaps: it drops the resident pages
// (MADV_DONTNEED) and refuses further native calls, so a view used after close re-reads the
// file instead of touching unmapped memory (a use-after-unmap would be a SIGSEGV).
//
// Truncation: a page of a shared file mapping that lies beyond the current end of file raises
// SIGBUS on access. We install a SIGBUS handler that, for addresses inside one of our mappings,
// replaces the rest of the mapping with anonymous zero pages and counts the event; the faulting
// load is then retried and reads zeros. The JS side checks that count and fstat() and reports a
// typed error. Faults elsewhere are passed to the previous handler (default: the process dies).
//
// All offsets and lengths are 64-bit (size_t / off_t); JS passes them as doubles, exact to 2^53.

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace {

using namespace airllm;
using v8::SharedArrayBuffer;

// Registry of live mappings. The SIGBUS handler reads it, so it is a fixed array of atomics
// (no locks, no allocation); writers serialize on a mutex.
constexpr int kMaxRegions = 1024;
enum RegionState : int { kFree = 0, kLive = 1, kClosed = 2 };

struct Region {
  std::atomic<uintptr_t> start{0};
  std::atomic<size_t> length{0};
  std::atomic<int> state{kFree};
  // SIGBUS faults absorbed inside this mapping (each replaced the tail with zero pages).
  std::atomic<uint64_t> busFaults{0};
};

Region g_regions[kMaxRegions];
std::mutex g_registry_mutex;
size_t g_page = 0;

std::once_flag g_sigbus_once;
struct sigaction g_prev_sigbus;

size_t PageSize() {
  if (g_page == 0) g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return g_page;
}

void BusHandler(int sig, siginfo_t* info, void* uctx) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (int i = 0; i < kMaxRegions; i++) {
    Region& r = g_regions[i];
    if (r.state.load(std::memory_order_acquire) == kFree) continue;
    const uintptr_t start = r.start.load(std::memory_order_acquire);
    const size_t len = r.length.load(std::memory_order_acquire);
    if (start == 0 || addr < start || addr >= start + len) continue;
    // Everything from the faulting page to the end of the mapping lies beyond the new end of
    // file (a file only loses its tail), so one MAP_FIXED call covers all later faults too.
    const size_t page = PageSize();
    const uintptr_t from = addr & ~(static_cast<uintptr_t>(page) - 1);
    const size_t mappedEnd = (len + page - 1) & ~(page - 1);
    void* p = mmap(reinterpret_cast<void*>(from), start + mappedEnd - from, PROT_READ,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) break;  // fall through to the previous handler
    r.busFaults.fetch_add(1, std::memory_order_acq_rel);
    return;
  }
  // Not ours: behave as if we were not installed.
  if (g_prev_sigbus.sa_flags & SA_SIGINFO) {
    if (g_prev_sigbus.sa_sigaction != nullptr) {
      g_prev_sigbus.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (g_prev_sigbus.sa_handler != SIG_DFL && g_prev_sigbus.sa_handler != SIG_IGN) {
    g_prev_sigbus.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the faulting instruction re-executes and the
  // kernel delivers SIGBUS again, now terminating the process as it would have without us.
  signal(SIGBUS, SIG_DFL);
}

void InstallBusHandler() {
  std::call_once(g_sigbus_once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = BusHandler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_prev_sigbus);
  });
}

int RegisterRegion(void* start, size_t length) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  for (int i = 0; i < kMaxRegions; i++) {
    Region& r = g_regions[i];
    if (r.state.load() != kFree) continue;
    r.busFaults.store(0);
    r.length.store(length);
    r.start.store(reinterpret_cast<uintptr_t>(start));
    r.state.store(kLive, std::memory_order_release);
    return i;
  }
  return -1;
}

// V8 calls this once, on whichever thread frees the last reference to the backing store.
void UnmapDeleter(void* data, size_t length, void* deleterData) {
  const int index = static_cast<int>(reinterpret_cast<intptr_t>(deleterData));
  {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    Region& r = g_regions[index];
    r.start.store(0, std::memory_order_release);
    r.length.store(0);
    r.state.store(kFree, std::memory_order_release);
  }
  munmap(data, length);
}

struct Target {
  uint8_t* base;
  size_t length;
  Region* region;
};

// Resolve args[0] (a SharedArrayBuffer made by map()) and [offset, offset+length) within it.
bool ResolveRange(const FunctionCallbackInfo<Value>& args, Target* t, uint64_t* offset,
                  uint64_t* length, bool allowClosed = false) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 1 || !args[0]->IsSharedArrayBuffer()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "expected a SharedArrayBuffer returned by map()");
    return false;
  }
  Local<SharedArrayBuffer> sab = args[0].As<SharedArrayBuffer>();
  auto store = sab->GetBackingStore();
  const uintptr_t data = reinterpret_cast<uintptr_t>(store->Data());
  Region* found = nullptr;
  for (int i = 0; i < kMaxRegions && data != 0; i++) {
    Region& r = g_regions[i];
    if (r.state.load(std::memory_order_acquire) != kFree && r.start.load() == data) {
      found = &r;
      break;
    }
  }
  // madvise(DONTNEED) on ordinary (anonymous) memory would zero it: only ever act on our maps.
  if (found == nullptr) {
    ThrowCode(isolate, "ERR_NOT_MAPPED", "this SharedArrayBuffer is not a file mapping");
    return false;
  }
  if (!allowClosed && found->state.load() == kClosed) {
    ThrowCode(isolate, "ERR_CLOSED", "the mapping was closed");
    return false;
  }
  t->base = reinterpret_cast<uint8_t*>(data);
  t->length = store->ByteLength();
  t->region = found;
  if (offset == nullptr) return true;
  if (!ArgSize(args, 1, "offset", offset) || !ArgSize(args, 2, "length", length)) return false;
  if (*offset > t->length || *length > t->length - *offset) {
    ThrowCode(isolate, "ERR_OUT_OF_RANGE",
              "range " + std::to_string(*offset) + "+" + std::to_string(*length) +
                  " exceeds mapping of " + std::to_string(t->length) + " bytes");
    return false;
  }
  return true;
}

// map(fd) -> SharedArrayBuffer over the whole file, read-only.
void Map(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 1 || !args[0]->IsInt32()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "map(fd): fd must be an integer");
    return;
  }
  const int fd = args[0].As<v8::Int32>()->Value();
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ThrowCode(isolate, ErrnoCode(err), "fstat failed", err);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    ThrowCode(isolate, "EISDIR", "is a directory");
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    ThrowCode(isolate, "ENOTREG", "not a regular file");
    return;
  }
  if (st.st_size <= 0) {
    ThrowCode(isolate, "EEMPTY", "file is empty");
    return;
  }
  const size_t length = static_cast<size_t>(st.st_size);
  InstallBusHandler();
  void* addr = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    ThrowCode(isolate, ErrnoCode(err), "mmap failed", err);
    return;
  }
  const int index = RegisterRegion(addr, length);
  if (index < 0) {
    munmap(addr, length);
    ThrowCode(isolate, "ERR_TOO_MANY_MAPPINGS", "too many live mappings");
    return;
  }
  std::unique_ptr<v8::BackingStore> store = SharedArrayBuffer::NewBackingStore(
      addr, length, UnmapDeleter, reinterpret_cast<void*>(static_cast<intptr_t>(index)));
  Local<SharedArrayBuffer> sab =
      SharedArrayBuffer::New(isolate, std::shared_ptr<v8::BackingStore>(std::move(store)));
  args.GetReturnValue().Set(sab);
}

// advise(sab, offset, length, advice): page alignment handled here. 'dontneed' rounds inward
// (it must not drop a neighbouring segment's partial page); the others round outward.
void Advise(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  Target t;
  uint64_t offset, length;
  if (!ResolveRange(args, &t, &offset, &length)) return;
  if (args.Length() < 4 || !args[3]->IsString()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "advice must be a string");
    return;
  }
  String::Utf8Value s(isolate, args[3]);
  const std::string advice(*s ? *s : "");
  int flag;
  bool inward = false;
  if (advice == "willneed") flag = MADV_WILLNEED;
  else if (advice == "dontneed") { flag = MADV_DONTNEED; inward = true; }
  else if (advice == "sequential") flag = MADV_SEQUENTIAL;
  else if (advice == "random") flag = MADV_RANDOM;
  else if (advice == "normal") flag = MADV_NORMAL;
  else if (advice == "populate") flag = MADV_POPULATE_READ;
  else {
    ThrowCode(isolate, "ERR_INVALID_ARG", "unknown advice '" + advice + "'");
    return;
  }
  if (length == 0) return;
  const uint64_t page = PageSize();
  uint64_t from, to;
  if (inward) {
    from = (offset + page - 1) / page * page;
    // The mapping's last partial page holds no other segment: it may be dropped whole.
    to = offset + length == t.length ? (t.length + page - 1) / page * page
                                     : (offset + length) / page * page;
    if (to <= from) return;
  } else {
    from = offset / page * page;
    to = (offset + length + page - 1) / page * page;
  }
  if (madvise(t.base + from, to - from, flag) != 0) {
    const int err = errno;
    ThrowCode(isolate, ErrnoCode(err), "madvise(" + advice + ") failed", err);
  }
}

// lock(sab, offset, length, on): mlock (faulting the pages in and keeping them from reclaim) or
// munlock the range, rounded outward to pages. Locks do not nest: one munlock undoes any number
// of mlocks. Fails with EPERM / ENOMEM / EAGAIN beyond RLIMIT_MEMLOCK without CAP_IPC_LOCK.
void Lock(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  Target t;
  uint64_t offset, length;
  if (!ResolveRange(args, &t, &offset, &length)) return;
  if (length == 0) return;
  const bool on = args.Length() < 4 || args[3]->BooleanValue(isolate);
  const uint64_t page = PageSize();
  const uint64_t from = offset / page * page;
  const uint64_t to = (offset + length + page - 1) / page * page;
  if ((on ? mlock(t.base + from, to - from) : munlock(t.base + from, to - from)) != 0) {
    const int err = errno;
    ThrowCode(isolate, ErrnoCode(err), std::string(on ? "mlock" : "munlock") + " failed", err);
  }
}

// touch(sab, offset, length) -> sum of one byte per page: faults the pages in (reading the file
// where needed). The sum keeps the loads from being optimized away.
void Touch(const FunctionCallbackInfo<Value>& args) {
  Target t;
  uint64_t offset, length;
  if (!ResolveRange(args, &t, &offset, &length)) return;
  const uint64_t page = PageSize();
  uint64_t sum = 0;
  if (length > 0) {
    const volatile uint8_t* p = t.base;
    sum += p[offset];
    for (uint64_t a = (offset / page + 1) * page; a < offset + length; a += page) sum += p[a];
  }
  args.GetReturnValue().Set(Number::New(args.GetIsolate(), static_cast<double>(sum)));
}

// residentBytes(sab, offset, length): bytes of the range whose pages are in the page cache
// (mincore on a shared file mapping reports page-cache residency, not this process's RSS).
void ResidentBytes(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  Target t;
  uint64_t offset, length;
  if (!ResolveRange(args, &t, &offset, &length, true)) return;
  if (length == 0) {
    args.GetReturnValue().Set(Number::New(isolate, 0));
    return;
  }
  const uint64_t page = PageSize();
  const uint64_t from = offset / page * page;
  const uint64_t to = (offset + length + page - 1) / page * page;
  const uint64_t pages = (to - from) / page;
  // Bounded scratch: query at most 1 Mi pages (4 GiB) per call.
  const uint64_t batch = 1 << 20;
  std::vector<unsigned char> vec(static_cast<size_t>(pages < batch ? pages : batch));
  uint64_t resident = 0;
  for (uint64_t done = 0; done < pages; done += batch) {
    const uint64_t n = pages - done < batch ? pages - done : batch;
    uint8_t* a = t.base + from + done * page;
    if (mincore(a, n * page, vec.data()) != 0) {
      const int err = errno;
      ThrowCode(isolate, ErrnoCode(err), "mincore failed", err);
      return;
    }
    for (uint64_t i = 0; i < n; i++) {
      if (!(vec[i] & 1)) continue;
      const uint64_t ps = from + (done + i) * page;
      const uint64_t lo = ps > offset ? ps : offset;
      const uint64_t hi = ps + page < offset + length ? ps + page : offset + length;
      resident += hi - lo;
    }
  }
  args.GetReturnValue().Set(Number::New(isolate, static_cast<double>(resident)));
}

// close(sab): drop the resident pages and refuse further calls. The address range stays
// mapped until V8 collects the last SharedArrayBuffer referring to it (see the top comment).
void Close(const FunctionCallbackInfo<Value>& args) {
  Target t;
  if (!ResolveRange(args, &t, nullptr, nullptr, true)) return;
  int expected = kLive;
  if (!t.region->state.compare_exchange_strong(expected, kClosed)) return;  // already closed
  const size_t page = PageSize();
  // Locked pages refuse MADV_DONTNEED: unlock first (a no-op where nothing is locked).
  munlock(t.base, (t.length + page - 1) / page * page);
  madvise(t.base, (t.length + page - 1) / page * page, MADV_DONTNEED);
}

// busFaults(sab) -> SIGBUS faults absorbed in this mapping (a truncated file was read).
void BusFaults(const FunctionCallbackInfo<Value>& args) {
  Target t;
  if (!ResolveRange(args, &t, nullptr, nullptr, true)) return;
  args.GetReturnValue().Set(
      Number::New(args.GetIsolate(), static_cast<double>(t.region->busFaults.load())));
}

// isMapping(value) -> whether value is a live SharedArrayBuffer made by map().
void IsMapping(const FunctionCallbackInfo<Value>& args) {
  bool ok = false;
  if (args.Length() >= 1 && args[0]->IsSharedArrayBuffer()) {
    const uintptr_t data =
        reinterpret_cast<uintptr_t>(args[0].As<SharedArrayBuffer>()->GetBackingStore()->Data());
    for (int i = 0; i < kMaxRegions && data != 0 && !ok; i++) {
      ok = g_regions[i].state.load() == kLive && g_regions[i].start.load() == data;
    }
  }
  args.GetReturnValue().Set(ok);
}

// dropFileCache(path, offset?, length?): write back and evict the file's pages from the page
// cache (posix_fadvise DONTNEED), for cold-cache measurements. Pages still mapped by some
// process stay. length 0 means "to the end of the file".
void DropFileCache(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 1 || !args[0]->IsString()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "dropFileCache(path): path must be a string");
    return;
  }
  String::Utf8Value path(isolate, args[0]);
  uint64_t offset = 0, length = 0;
  if (args.Length() >= 2 && !args[1]->IsUndefined() && !ArgSize(args, 1, "offset", &offset)) return;
  if (args.Length() >= 3 && !args[2]->IsUndefined() && !ArgSize(args, 2, "length", &length)) return;
  const int fd = open(*path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    ThrowCode(isolate, ErrnoCode(err), std::string("open ") + *path + " failed", err);
    return;
  }
  // Dirty pages cannot be dropped: write them back first (fdatasync works on O_RDONLY fds).
  fdatasync(fd);
  const int rc = posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length),
                               POSIX_FADV_DONTNEED);
  close(fd);
  if (rc != 0) ThrowCode(isolate, ErrnoCode(rc), "posix_fadvise(DONTNEED) failed", rc);
}

}  // namespace

NODE_MODULE_INIT(/* exports, module, context */) {
  Isolate* isolate = context->GetIsolate();
  airllm::RegisterRead(exports);
  NODE_SET_METHOD(exports, "map", Map);
  NODE_SET_METHOD(exports, "advise", Advise);
  NODE_SET_METHOD(exports, "touch", Touch);
  NODE_SET_METHOD(exports, "lock", Lock);
  NODE_SET_METHOD(exports, "residentBytes", ResidentBytes);
  NODE_SET_METHOD(exports, "close", Close);
  NODE_SET_METHOD(exports, "busFaults", BusFaults);
  NODE_SET_METHOD(exports, "isMapping", IsMapping);
  NODE_SET_METHOD(exports, "dropFileCache", DropFileCache);
  exports
      ->Set(context, String::NewFromUtf8Literal(isolate, "pageSize"),
            Number::New(isolate, static_cast<double>(PageSize())))
      .Check();
}
