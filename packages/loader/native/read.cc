// The explicit read path: pread into SharedArrayBuffers with several reads in flight from the
// addon's own threads, and page-aligned buffers for it.
//
// readInto(fd, target, targetOffset, fileOffset, length, threads, chunkBytes, directFd) reads
// [fileOffset, fileOffset + length) of the file into target at targetOffset. The range is cut
// at file offsets that are multiples of chunkBytes; `threads` threads (the caller's plus
// threads − 1 started for the call) take the pieces in file order, so up to `threads` reads are
// in flight and the device sees a nearly sequential stream. With directFd ≥ 0 (the same file
// opened with O_DIRECT) every 4096-aligned part of a piece whose destination is 4096-aligned too
// is read through it (DMA to the buffer, no page cache), the rest through fd. The call blocks:
// it is made from the prefetch worker, never the main thread.
//
// A read returning 0 before the end (the file shrank) throws code ERR_SHORT_READ with the file
// offset; a failed pread throws its errno code.
//
// allocate(bytes) returns a SharedArrayBuffer over fresh anonymous pages (page-aligned, so
// O_DIRECT can read into it), unmapped when V8 frees it.

#include "common.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace airllm {
namespace {

using v8::SharedArrayBuffer;

constexpr uint64_t kAlign = 4096;
constexpr int kMaxThreads = 16;

struct ReadJob {
  int fd;
  int directFd;
  uint8_t* dst;         // where fileOffset lands
  uint64_t fileOffset;  // first byte
  uint64_t end;         // one past the last byte (file offset)
  uint64_t chunk;
  std::atomic<uint64_t> next{0};  // index of the next piece
  std::atomic<int> error{0};
  std::atomic<uint64_t> shortAt{UINT64_MAX};
};

// pread [from, to) of the file into its place; false on error or end of file (recorded in job).
bool ReadSpan(ReadJob* job, int fd, uint64_t from, uint64_t to) {
  uint64_t at = from;
  while (at < to) {
    const ssize_t n = pread(fd, job->dst + (at - job->fileOffset), to - at, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (fd == job->directFd && errno == EINVAL) {
        // The file system refused this O_DIRECT read after all: the buffered path reads it.
        fd = job->fd;
        continue;
      }
      job->error.store(errno);
      return false;
    }
    if (n == 0) {
      uint64_t prev = job->shortAt.load();
      while (at < prev && !job->shortAt.compare_exchange_weak(prev, at)) {
      }
      return false;
    }
    at += static_cast<uint64_t>(n);
    // An O_DIRECT read ending short of a block (end of file) leaves an unaligned remainder.
    if (fd == job->directFd && at % kAlign != 0) fd = job->fd;
  }
  return true;
}

// One piece: its 4096-aligned middle through O_DIRECT when possible, the edges buffered.
bool ReadPiece(ReadJob* job, uint64_t from, uint64_t to) {
  if (job->directFd >= 0) {
    const uint64_t a = (from + kAlign - 1) / kAlign * kAlign;
    const uint64_t b = to / kAlign * kAlign;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(job->dst + (a - job->fileOffset));
    if (a < b && addr % kAlign == 0) {
      return (from == a || ReadSpan(job, job->fd, from, a)) && ReadSpan(job, job->directFd, a, b) &&
             (b == to || ReadSpan(job, job->fd, b, to));
    }
  }
  return ReadSpan(job, job->fd, from, to);
}

void Work(ReadJob* job) {
  const uint64_t first = job->fileOffset / job->chunk;
  for (;;) {
    if (job->error.load() != 0 || job->shortAt.load() != UINT64_MAX) return;
    const uint64_t k = first + job->next.fetch_add(1);
    const uint64_t from = std::max(job->fileOffset, k * job->chunk);
    if (from >= job->end) return;
    const uint64_t to = std::min(job->end, (k + 1) * job->chunk);
    if (!ReadPiece(job, from, to)) return;
  }
}

bool ArgInt(const FunctionCallbackInfo<Value>& args, int i, const char* name, int64_t min, int64_t max, int64_t* out) {
  if (i >= args.Length() || !args[i]->IsNumber()) {
    ThrowCode(args.GetIsolate(), "ERR_INVALID_ARG", std::string(name) + " must be a number");
    return false;
  }
  const double d = args[i].As<Number>()->Value();
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowCode(args.GetIsolate(), "ERR_INVALID_ARG", std::string(name) + " must be an integer in " + std::to_string(min) + ".." + std::to_string(max));
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

void ReadInto(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  int64_t fd, threads, chunk, directFd;
  uint64_t targetOffset, fileOffset, length;
  if (!ArgInt(args, 0, "fd", 0, INT32_MAX, &fd)) return;
  if (args.Length() < 2 || !args[1]->IsSharedArrayBuffer()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "target must be a SharedArrayBuffer");
    return;
  }
  if (!ArgSize(args, 2, "targetOffset", &targetOffset) || !ArgSize(args, 3, "fileOffset", &fileOffset) ||
      !ArgSize(args, 4, "length", &length) || !ArgInt(args, 5, "threads", 1, kMaxThreads, &threads) ||
      !ArgInt(args, 6, "chunkBytes", static_cast<int64_t>(kAlign), INT64_C(1) << 40, &chunk) ||
      !ArgInt(args, 7, "directFd", -1, INT32_MAX, &directFd)) {
    return;
  }
  if (chunk % static_cast<int64_t>(kAlign) != 0) {
    ThrowCode(isolate, "ERR_INVALID_ARG", "chunkBytes must be a multiple of 4096");
    return;
  }
  auto store = args[1].As<SharedArrayBuffer>()->GetBackingStore();
  const uint64_t size = store->ByteLength();
  if (targetOffset > size || length > size - targetOffset) {
    ThrowCode(isolate, "ERR_OUT_OF_RANGE", "range " + std::to_string(targetOffset) + "+" + std::to_string(length) + " exceeds the target of " + std::to_string(size) + " bytes");
    return;
  }
  ReadJob job;
  job.fd = static_cast<int>(fd);
  job.directFd = static_cast<int>(directFd);
  job.dst = static_cast<uint8_t*>(store->Data()) + targetOffset;
  job.fileOffset = fileOffset;
  job.end = fileOffset + length;
  job.chunk = static_cast<uint64_t>(chunk);
  if (length > 0) {
    const uint64_t pieces = (job.end - 1) / job.chunk - fileOffset / job.chunk + 1;
    const int helpers = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(threads), pieces)) - 1;
    std::vector<std::thread> pool;
    pool.reserve(helpers);
    for (int i = 0; i < helpers; i++) pool.emplace_back(Work, &job);
    Work(&job);
    for (auto& t : pool) t.join();
  }
  const int err = job.error.load();
  if (err != 0) {
    ThrowCode(isolate, ErrnoCode(err), "pread failed", err);
    return;
  }
  const uint64_t at = job.shortAt.load();
  if (at != UINT64_MAX) {
    ThrowCode(isolate, "ERR_SHORT_READ", "the file ended at offset " + std::to_string(at) + " before the range did");
    return;
  }
  args.GetReturnValue().Set(Number::New(isolate, static_cast<double>(length)));
}

void FreeAnonymous(void* data, size_t length, void*) {
  if (data != nullptr && length > 0) munmap(data, length);
}

void Allocate(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  uint64_t bytes;
  if (!ArgSize(args, 0, "bytes", &bytes)) return;
  void* p = nullptr;
  if (bytes > 0) {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ThrowCode(isolate, ErrnoCode(err), "mmap of " + std::to_string(bytes) + " anonymous bytes failed", err);
      return;
    }
  }
  std::unique_ptr<v8::BackingStore> store = SharedArrayBuffer::NewBackingStore(p, bytes, FreeAnonymous, nullptr);
  args.GetReturnValue().Set(SharedArrayBuffer::New(isolate, std::shared_ptr<v8::BackingStore>(std::move(store))));
}

}  // namespace

void RegisterRead(Local<Object> exports) {
  NODE_SET_METHOD(exports, "readInto", ReadInto);
  NODE_SET_METHOD(exports, "allocate", Allocate);
}

}  // namespace airllm
