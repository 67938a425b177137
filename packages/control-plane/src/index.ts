// What later issues build on: the server, its guards, the database and the audit log.
export {
  buildServer,
  DEFAULT_BODY_LIMIT,
  type App,
  type RouteContext,
  type RegisteredRoute,
  type ServerDeps,
} from './server.js';
export { startControlPlane, openConfiguredDatabase, type RunningControlPlane } from './app.js';
export { loadConfig, resolveJwtSecret, ConfigError, VERSION, REPO_ROOT, type Config } from './config.js';
export { createLogger, redactUrl } from './logging.js';
export {
  ApiError,
  badRequest,
  unauthorized,
  forbidden,
  notFound,
  conflict,
  parseIdParam,
  ErrorSchema,
} from './errors.js';
export { openDatabase, type Database, type DbKind } from './db/connect.js';
export { migrate, loadMigrations, MIGRATIONS_DIR } from './db/migrate.js';
export type * from './db/schema.js';
export {
  createGuards,
  actorOf,
  sessionOf,
  teamOf,
  type Guards,
  type Guard,
  type AuthState,
  type SessionUser,
  type TeamContext,
} from './auth/guards.js';
export {
  ApiKeyAuthenticator,
  generateApiKey,
  hashApiKey,
  type ApiKeyIdentity,
  type RevocationBus,
} from './auth/api-keys.js';
export { SessionTokens, SESSION_TTL_SECONDS, type SessionClaims } from './auth/jwt.js';
export { hashPassword, verifyPassword, passwordWeakness } from './auth/passwords.js';
export { OAuthRegistry, type OAuthProvider, type OAuthProfile } from './auth/oauth/provider.js';
export { GitHubProvider } from './auth/oauth/github.js';
export { AuditLogger, SYSTEM_ACTOR, userActor, apiKeyActor, type AuditActor, type AuditEntry } from './audit/logger.js';
export { ensureBootstrapAdmin, type BootstrapAdminInput, type BootstrapAdminResult } from './bootstrap.js';
export { openRedis, type RedisHandle } from './redis.js';
export {
  getMembership,
  loginTeam,
  normalizeEmail,
  normalizeName,
  isUniqueViolation,
  type Membership,
} from './services/accounts.js';
export { errorResponses, StringEnum, SHARED_SCHEMAS } from './routes/schemas.js';
