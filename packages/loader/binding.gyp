{
  "targets": [
    {
      "target_name": "airllm_loader",
      "sources": ["native/mmap.cc", "native/read.cc"],
      "cflags!": ["-O3"],
      "cflags_cc!": ["-std=gnu++17", "-O3", "-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-cast-function-type"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_OPTIMIZATION_LEVEL": "2"
          }
        }]
      ]
    }
  ]
}
