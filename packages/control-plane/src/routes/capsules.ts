// /v1/capsules: the capsule API.
import type { App, RouteContext } from '../server.js';

export function capsuleRoutes(_app: App, _ctx: RouteContext): void {}
