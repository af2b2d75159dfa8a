/** Library entry of @airllm/cli: the OpenAI-compatible server, for embedding in other programs. */
export { createServer, type AirllmServer, type ServerOptions, type ServerStats } from './server/server.js';
export { ApiError } from './server/openai.js';
export { tokenizeInput, type TokenizeCliOptions, type TokenizeResult } from './commands/tokenize.js';
