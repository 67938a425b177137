// Synchronous, on-demand loading of Node built-ins and native packages that
// most envd runs never need (or need only after start-up): each one costs
// milliseconds to load, and start-up time is on every capsule's critical path.
import { createRequire } from 'node:module';

export const nodeRequire = createRequire(import.meta.url);

export function lazy<T>(load: () => T): () => T {
  let value: T | undefined;
  let loaded = false;
  return () => {
    if (!loaded) {
      value = load();
      loaded = true;
    }
    return value as T;
  };
}
