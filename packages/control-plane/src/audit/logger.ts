// Append-only audit log. One named method per event; each write is
// fire-and-forget: it never delays or fails the request that caused it.
import { formatId, PLATFORM_UUID } from '@wrenn/contracts';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { ActorType, AuditScope, AuditStatus, DB, JsonObject, TeamRole } from '../db/schema.js';

/** Who did it. `id` is the wire id (usr-…, key-…); system events have neither id nor name. */
export interface AuditActor {
  type: ActorType;
  id?: string;
  name?: string;
}

export const SYSTEM_ACTOR: AuditActor = { type: 'system' };

export function userActor(userId: string, name: string): AuditActor {
  return { type: 'user', id: formatId('user', userId), name };
}

export function apiKeyActor(keyId: string, keyName: string): AuditActor {
  return { type: 'api_key', id: formatId('apiKey', keyId), name: keyName };
}

export interface AuditEntry {
  teamId: string;
  actor: AuditActor;
  resourceType: string;
  resourceId?: string;
  action: string;
  scope: AuditScope;
  status: AuditStatus;
  metadata?: JsonObject;
}

export type LoginMethod = 'password' | 'github';

export class AuditLogger {
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly db: Kysely<DB>,
    private readonly log: Logger,
  ) {}

  /** Records any entry; the extension point for events without a named method. */
  record(e: AuditEntry): void {
    const p = this.db
      .insertInto('audit_logs')
      .values({
        team_id: e.teamId,
        actor_type: e.actor.type,
        actor_id: e.actor.id ?? null,
        actor_name: e.actor.name ?? '',
        resource_type: e.resourceType,
        resource_id: e.resourceId ?? null,
        action: e.action,
        scope: e.scope,
        status: e.status,
        metadata: JSON.stringify(e.metadata ?? {}),
      })
      .execute()
      .then(
        () => {},
        (err: unknown) =>
          this.log.warn({ err, action: e.action, resourceType: e.resourceType }, 'audit: failed to write entry'),
      );
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Waits for the writes started so far (used at shutdown and by tests). */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  // --- auth and account (team scope: the user's own team sees its members' sign-ins) ---

  userSignedUp(actor: AuditActor, teamId: string, method: LoginMethod): void {
    this.record({
      teamId,
      actor,
      resourceType: 'user',
      resourceId: actor.id,
      action: 'signup',
      scope: 'team',
      status: 'success',
      metadata: { method },
    });
  }

  userLoggedIn(actor: AuditActor, teamId: string, method: LoginMethod): void {
    this.record({
      teamId,
      actor,
      resourceType: 'user',
      resourceId: actor.id,
      action: 'login',
      scope: 'team',
      status: 'info',
      metadata: { method },
    });
  }

  /** A failed sign-in; platform admins see these. The email is kept only when it names a real account. */
  loginFailed(reason: string, method: LoginMethod, user?: { id: string; email: string }): void {
    this.record({
      teamId: PLATFORM_UUID,
      actor: user ? { type: 'user', id: formatId('user', user.id) } : SYSTEM_ACTOR,
      resourceType: 'user',
      resourceId: user ? formatId('user', user.id) : undefined,
      action: 'login_failed',
      scope: 'admin',
      status: 'warning',
      metadata: user ? { reason, method, email: user.email } : { reason, method },
    });
  }

  teamSwitched(actor: AuditActor, toTeamId: string, fromTeamId: string): void {
    this.record({
      teamId: toTeamId,
      actor,
      resourceType: 'team',
      resourceId: formatId('team', toTeamId),
      action: 'switch',
      scope: 'team',
      status: 'info',
      metadata: { from_team_id: formatId('team', fromTeamId) },
    });
  }

  userRenamed(actor: AuditActor, teamId: string, oldName: string, newName: string): void {
    this.record({
      teamId,
      actor,
      resourceType: 'user',
      resourceId: actor.id,
      action: 'rename',
      scope: 'team',
      status: 'info',
      metadata: { old_name: oldName, new_name: newName },
    });
  }

  passwordChanged(actor: AuditActor, teamId: string, added: boolean): void {
    this.record({
      teamId,
      actor,
      resourceType: 'user',
      resourceId: actor.id,
      action: added ? 'password_add' : 'password_change',
      scope: 'team',
      status: 'info',
    });
  }

  adminBootstrapped(userId: string, teamId: string, email: string): void {
    this.record({
      teamId: PLATFORM_UUID,
      actor: SYSTEM_ACTOR,
      resourceType: 'user',
      resourceId: formatId('user', userId),
      action: 'bootstrap_admin',
      scope: 'admin',
      status: 'success',
      metadata: { email, team_id: formatId('team', teamId) },
    });
  }

  // --- teams ---

  teamCreated(actor: AuditActor, teamId: string, name: string): void {
    this.record({
      teamId,
      actor,
      resourceType: 'team',
      resourceId: formatId('team', teamId),
      action: 'create',
      scope: 'team',
      status: 'success',
      metadata: { name },
    });
  }

  teamRenamed(actor: AuditActor, teamId: string, oldName: string, newName: string): void {
    this.record({
      teamId,
      actor,
      resourceType: 'team',
      resourceId: formatId('team', teamId),
      action: 'rename',
      scope: 'team',
      status: 'info',
      metadata: { old_name: oldName, new_name: newName },
    });
  }

  /** Kept in the team's own log and in the platform log, since nobody can read a deleted team's log. */
  teamDeleted(actor: AuditActor, teamId: string, name: string): void {
    this.teamAdminEvent(actor, teamId, 'delete', 'warning', { name });
  }

  /** Platform admin enabled bring-your-own-cloud hosts for a team: in the team's log and the platform's. */
  teamByocEnabled(actor: AuditActor, teamId: string, name: string): void {
    this.teamAdminEvent(actor, teamId, 'set_byoc', 'success', { name, enabled: true });
  }

  /** A platform admin's (or owner's) action on a whole team, recorded in the team's log and the platform's. */
  private teamAdminEvent(
    actor: AuditActor,
    teamId: string,
    action: string,
    status: AuditEntry['status'],
    metadata: Record<string, unknown>,
  ): void {
    for (const where of [teamId, PLATFORM_UUID]) {
      this.record({
        teamId: where,
        actor,
        resourceType: 'team',
        resourceId: formatId('team', teamId),
        action,
        scope: 'admin',
        status,
        metadata,
      });
    }
  }

  // --- members (admin scope: only owners and admins see them) ---

  memberAdded(actor: AuditActor, teamId: string, userId: string, email: string, role: TeamRole): void {
    this.record({
      teamId,
      actor,
      resourceType: 'member',
      resourceId: formatId('user', userId),
      action: 'add',
      scope: 'admin',
      status: 'success',
      metadata: { email, role },
    });
  }

  memberRemoved(actor: AuditActor, teamId: string, userId: string, email: string): void {
    this.record({
      teamId,
      actor,
      resourceType: 'member',
      resourceId: formatId('user', userId),
      action: 'remove',
      scope: 'admin',
      status: 'warning',
      metadata: { email },
    });
  }

  memberLeft(actor: AuditActor, teamId: string): void {
    this.record({
      teamId,
      actor,
      resourceType: 'member',
      resourceId: actor.id,
      action: 'leave',
      scope: 'admin',
      status: 'info',
    });
  }

  memberRoleChanged(actor: AuditActor, teamId: string, userId: string, oldRole: TeamRole, newRole: TeamRole): void {
    this.record({
      teamId,
      actor,
      resourceType: 'member',
      resourceId: formatId('user', userId),
      action: 'role_update',
      scope: 'admin',
      status: 'info',
      metadata: { old_role: oldRole, new_role: newRole },
    });
  }

  // --- hosts (regular hosts are platform events; BYOC hosts belong to their team) ---

  private hostEvent(
    actor: AuditActor,
    host: { id: string; teamId: string | null },
    action: string,
    status: AuditStatus,
    metadata?: JsonObject,
  ): void {
    this.record({
      teamId: host.teamId ?? PLATFORM_UUID,
      actor,
      resourceType: 'host',
      resourceId: formatId('host', host.id),
      action,
      scope: host.teamId ? 'team' : 'admin',
      status,
      metadata,
    });
  }

  hostCreated(actor: AuditActor, host: { id: string; teamId: string | null; type: string }): void {
    this.hostEvent(actor, host, 'create', 'success', { type: host.type });
  }

  hostTokenRegenerated(actor: AuditActor, host: { id: string; teamId: string | null }): void {
    this.hostEvent(actor, host, 'regenerate_token', 'info');
  }

  hostRegistered(host: { id: string; teamId: string | null; address: string }): void {
    this.hostEvent(SYSTEM_ACTOR, host, 'register', 'success', { address: host.address });
  }

  hostDeleted(actor: AuditActor, host: { id: string; teamId: string | null }, destroyed: number): void {
    this.hostEvent(actor, host, 'delete', 'warning', { destroyed_capsules: destroyed });
  }

  hostMarkedDown(host: { id: string; teamId: string | null }, missingCapsules: number): void {
    this.hostEvent(SYSTEM_ACTOR, host, 'marked_down', 'error', { missing_capsules: missingCapsules });
  }

  hostMarkedUp(host: { id: string; teamId: string | null }): void {
    this.hostEvent(SYSTEM_ACTOR, host, 'marked_up', 'success');
  }

  /** The host monitor changed a capsule's state to match what its host reports. */
  capsuleReconciled(capsule: { id: string; teamId: string }, from: string, to: string, reason: string): void {
    this.record({
      teamId: capsule.teamId,
      actor: SYSTEM_ACTOR,
      resourceType: 'sandbox',
      resourceId: formatId('capsule', capsule.id),
      action: to === 'stopped' ? 'stop' : to === 'paused' ? 'pause' : to,
      scope: 'team',
      status: to === 'running' || to === 'paused' ? 'info' : 'warning',
      metadata: { from, to, reason },
    });
  }

  // --- API keys ---

  apiKeyCreated(actor: AuditActor, key: { id: string; teamId: string; name: string; prefix: string }): void {
    this.record({
      teamId: key.teamId,
      actor,
      resourceType: 'api_key',
      resourceId: formatId('apiKey', key.id),
      action: 'create',
      scope: 'team',
      status: 'success',
      metadata: { name: key.name, key_prefix: key.prefix },
    });
  }

  apiKeyRevoked(actor: AuditActor, key: { id: string; teamId: string; name: string }): void {
    this.record({
      teamId: key.teamId,
      actor,
      resourceType: 'api_key',
      resourceId: formatId('apiKey', key.id),
      action: 'revoke',
      scope: 'team',
      status: 'warning',
      metadata: { name: key.name },
    });
  }

  // --- capsules (resource type "sandbox", like the host monitor's reconcile events) ---

  private capsuleEvent(
    actor: AuditActor,
    capsule: { id: string; teamId: string },
    action: string,
    status: AuditStatus,
    metadata?: JsonObject,
  ): void {
    this.record({
      teamId: capsule.teamId,
      actor,
      resourceType: 'sandbox',
      resourceId: formatId('capsule', capsule.id),
      action,
      scope: 'team',
      status,
      metadata,
    });
  }

  capsuleCreated(
    actor: AuditActor,
    capsule: { id: string; teamId: string },
    spec: { template: string; vcpus: number; memoryMb: number; diskSizeMb: number; hostId: string },
  ): void {
    this.capsuleEvent(actor, capsule, 'create', 'success', {
      template: spec.template,
      vcpus: spec.vcpus,
      memory_mb: spec.memoryMb,
      disk_size_mb: spec.diskSizeMb,
      host_id: formatId('host', spec.hostId),
    });
  }

  capsuleCreateFailed(actor: AuditActor, capsule: { id: string; teamId: string }, reason: string): void {
    this.capsuleEvent(actor, capsule, 'create', 'error', { reason });
  }

  capsulePaused(actor: AuditActor, capsule: { id: string; teamId: string }): void {
    this.capsuleEvent(actor, capsule, 'pause', 'success');
  }

  capsuleResumed(actor: AuditActor, capsule: { id: string; teamId: string }): void {
    this.capsuleEvent(actor, capsule, 'resume', 'success');
  }

  capsuleDestroyed(actor: AuditActor, capsule: { id: string; teamId: string }, from: string): void {
    this.capsuleEvent(actor, capsule, 'destroy', 'warning', { from });
  }

  // --- templates (resource id = the template's name, unique per team) ---

  snapshotCreated(
    actor: AuditActor,
    template: { teamId: string; name: string },
    source: { capsuleId: string; sizeBytes: number; overwrote: boolean },
  ): void {
    this.record({
      teamId: template.teamId,
      actor,
      resourceType: 'template',
      resourceId: template.name,
      action: 'snapshot.create',
      scope: 'team',
      status: 'success',
      metadata: {
        capsule_id: formatId('capsule', source.capsuleId),
        size_bytes: source.sizeBytes,
        overwrote: source.overwrote,
      },
    });
  }

  /** A platform template deleted by a platform admin (kept in the platform log). */
  templateDeleted(actor: AuditActor, template: { name: string; type: string; sizeBytes: number }): void {
    this.record({
      teamId: PLATFORM_UUID,
      actor,
      resourceType: 'template',
      resourceId: template.name,
      action: 'delete',
      scope: 'admin',
      status: 'warning',
      metadata: { type: template.type, size_bytes: template.sizeBytes },
    });
  }

  snapshotDeleted(actor: AuditActor, template: { teamId: string; name: string }): void {
    this.record({
      teamId: template.teamId,
      actor,
      resourceType: 'template',
      resourceId: template.name,
      action: 'snapshot.delete',
      scope: 'team',
      status: 'warning',
    });
  }
}
