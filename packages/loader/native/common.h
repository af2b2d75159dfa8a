// Helpers shared by the addon's files (mmap.cc: the mapping; read.cc: the explicit read path).
#pragma once

#include <node.h>
#include <v8.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <string>

namespace airllm {

using v8::Context;
using v8::Exception;
using v8::FunctionCallbackInfo;
using v8::Isolate;
using v8::Local;
using v8::Number;
using v8::Object;
using v8::String;
using v8::Value;

// Throw an Error with `code` (and `errno` when err != 0) on the isolate.
inline void ThrowCode(Isolate* isolate, const char* code, const std::string& message, int err = 0) {
  Local<Context> ctx = isolate->GetCurrentContext();
  std::string full = message;
  if (err != 0) full += std::string(" (") + strerror(err) + ")";
  Local<Value> e = Exception::Error(String::NewFromUtf8(isolate, full.c_str()).ToLocalChecked());
  Local<Object> o = e.As<Object>();
  o->Set(ctx, String::NewFromUtf8Literal(isolate, "code"),
         String::NewFromUtf8(isolate, code).ToLocalChecked())
      .Check();
  if (err != 0) {
    o->Set(ctx, String::NewFromUtf8Literal(isolate, "errno"), Number::New(isolate, err)).Check();
  }
  isolate->ThrowException(e);
}

inline const char* ErrnoCode(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EISDIR: return "EISDIR";
    case ENOMEM: return "ENOMEM";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENODEV: return "ENODEV";
    case EOVERFLOW: return "EOVERFLOW";
    default: return "EIO";
  }
}

// A non-negative integer argument no larger than 2^53 (the largest exact double).
inline bool ArgSize(const FunctionCallbackInfo<Value>& args, int i, const char* name, uint64_t* out) {
  Isolate* isolate = args.GetIsolate();
  if (i >= args.Length() || !args[i]->IsNumber()) {
    ThrowCode(isolate, "ERR_INVALID_ARG", std::string(name) + " must be a number");
    return false;
  }
  const double d = args[i].As<Number>()->Value();
  if (!(d >= 0) || d > 9007199254740992.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowCode(isolate, "ERR_INVALID_ARG", std::string(name) + " must be a non-negative integer");
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

// Adds readInto and allocate (read.cc) to the exports.
void RegisterRead(Local<Object> exports);

}  // namespace airllm
