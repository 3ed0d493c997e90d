import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sendData } from '../../platform/http/envelope.js';
import { PageQuery } from '../../platform/http/schemas.js';
import type { ReferralService } from './referral.service.js';

export function referralRoutes(app: FastifyInstance, referrals: ReferralService) {
  app.get('/api/v1/referrals/stats', {
    config: { auth: true },
    schema: { tags: ['referrals'], summary: 'Referees per level, commissions earned per level, signup bonuses received' },
  }, async (req, reply) => sendData(reply, 200, await referrals.stats(req.authUser!.id)));

  app.get<{ Querystring: { limit: number; cursor?: string } }>('/api/v1/referrals/commissions', {
    config: { auth: true },
    schema: { tags: ['referrals'], summary: 'Commissions received, newest first', querystring: Type.Object(PageQuery) },
  }, async (req, reply) => sendData(reply, 200, await referrals.commissions(req.authUser!.id, req.query.limit, req.query.cursor)));
}
