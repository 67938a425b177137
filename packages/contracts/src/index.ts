export * from './ids.js';
export * from './names.js';
