// /v1/hosts: host records, registration, heartbeats, tags.
import type { App, RouteContext } from '../server.js';

export function hostRoutes(_app: App, _ctx: RouteContext): void {}
