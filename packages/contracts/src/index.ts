export * from './ids.js';
export * from './names.js';
export * from './http.js';
