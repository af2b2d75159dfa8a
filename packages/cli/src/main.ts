console.log("airllm");
