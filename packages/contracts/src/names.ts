// Names that end up in file paths or lookups: an allowlist, checked at every edge.
export const SAFE_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;

export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && SAFE_NAME_RE.test(name) && !name.includes('..');
}

export const TEAM_NAME_RE = /^[A-Za-z0-9 _\-@']{1,128}$/;

/** Linux user names accepted for capsule processes and recipe USER lines. */
export const USER_NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
