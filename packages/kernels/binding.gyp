{
  "targets": [
    {
      "target_name": "airllm_kernels",
      "sources": [
        "native/addon.c",
        "native/ops.c",
        "native/dllama.c",
        "native/scalar.c",
        "native/avx2.c",
        "native/avx512.c",
        "native/amx.c",
        "native/neon.c"
      ],
      "cflags!": ["-O2", "-O3", "-fno-exceptions"],
      "cflags_c": ["-std=gnu11", "-O3", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_OPTIMIZATION_LEVEL": "3",
            "OTHER_CFLAGS": ["-std=gnu11", "-ffp-contract=off", "-fno-math-errno"]
          }
        }]
      ]
    }
  ]
}
