import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WalletType } from '../../platform/db/schema.js';
import { sendData, sendOutcome } from '../../platform/http/envelope.js';
import { EmptyBody, IdempotencyKeyHeader, PageQuery, SignedMoneyInput, WalletTypeSchema } from '../../platform/http/schemas.js';
import { asAppLogger } from '../../platform/logger.js';
import type { AdminService } from './admin.service.js';

const IdParams = Type.Object({ id: Type.String() });
type Page = { limit: number; cursor?: string };

export function adminRoutes(app: FastifyInstance, admin: AdminService) {
  const ctx = (req: FastifyRequest) => ({ actorId: req.authUser!.id, operationId: req.id, log: asAppLogger(req.log) });
  const guarded = { auth: true, admin: true };

  app.post<{ Body: { userId: string; walletType: WalletType; amount: string; reason: string } }>('/api/v1/admin/adjustments', {
    config: { ...guarded, idempotent: true },
    schema: {
      tags: ['admin'], summary: "Adjust a user's wallet (signed amount; never below 0.00)", headers: IdempotencyKeyHeader,
      body: Type.Object({
        userId: Type.String({ pattern: '^[1-9][0-9]{0,18}$' }),
        walletType: WalletTypeSchema,
        amount: SignedMoneyInput(),
        reason: Type.String({ minLength: 1, maxLength: 500 }),
      }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendOutcome(reply, await admin.adjust(req.idempotencyKey!, ctx(req), req.body)));

  app.get<{ Querystring: Page & { search?: string } }>('/api/v1/admin/users', {
    config: guarded,
    schema: { tags: ['admin'], summary: 'Search users by email or account number', querystring: Type.Object({ ...PageQuery, search: Type.Optional(Type.String({ maxLength: 254 })) }) },
  }, async (req, reply) => sendData(reply, 200, await admin.listUsers(req.query.search, req.query.limit, req.query.cursor)));

  app.get<{ Params: { id: string } }>('/api/v1/admin/users/:id', {
    config: { ...guarded, resourceParams: { id: 'id' } },
    schema: { tags: ['admin'], summary: 'A user with both wallets', params: IdParams },
  }, async (req, reply) => sendData(reply, 200, await admin.getUser(req.params.id)));

  for (const action of ['block', 'unblock'] as const) {
    app.post<{ Params: { id: string } }>(`/api/v1/admin/users/:id/${action}`, {
      config: { ...guarded, resourceParams: { id: 'id' } },
      schema: { tags: ['admin'], summary: action === 'block' ? 'Block a user (403 ACCOUNT_BLOCKED on their requests)' : 'Unblock a user', params: IdParams, body: EmptyBody },
    }, async (req, reply) => sendData(reply, 200, await admin.setBlocked(ctx(req), req.params.id, action === 'block')));
  }

  app.get<{ Querystring: Page }>('/api/v1/admin/audit', {
    config: guarded,
    schema: { tags: ['admin'], summary: 'Audit log of admin actions, newest first', querystring: Type.Object(PageQuery) },
  }, async (req, reply) => sendData(reply, 200, await admin.audit(req.query.limit, req.query.cursor)));

  app.get('/api/v1/admin/reconciliation', {
    config: guarded,
    schema: { tags: ['admin'], summary: 'Recompute every wallet from the ledger; check each book sums to 0.00' },
  }, async (_req, reply) => sendData(reply, 200, await admin.reconcile()));
}
