export { startEnvd, type EnvdServer, type StartOptions } from './server.js';
export { EnvdState, type EnvdOptions } from './state.js';
