export { buildProgram, describeError, main, CliError } from './program.js';
export * from './parse.js';
export * from './format.js';
