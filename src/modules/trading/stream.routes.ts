import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { DomainError } from '../../platform/errors.js';
import { sendError } from '../../platform/http/envelope.js';
import { bearerToken, verifyToken } from '../auth/authenticate.js';
import type { UserStateCache } from '../auth/user-state.cache.js';
import { CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, type Session, type StreamHub } from './stream.hub.js';

function streamToken(req: FastifyRequest): string | undefined {
  const q = (req.query as { token?: unknown } | undefined)?.token;
  if (typeof q === 'string' && q.length > 0) return q;
  return bearerToken(req);
}

/**
 * GET /api/v1/stream (WebSocket). Authentication happens after the upgrade so that
 * failures can be told with close codes: 4401 for a missing, bad, expired or revoked
 * token, 4403 for a blocked user.
 */
export function streamRoutes(app: FastifyInstance, hub: StreamHub, cache: UserStateCache) {
  const connect = (socket: WebSocket, req: FastifyRequest) => {
    let session: Session | undefined;
    const early: string[] = [];
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      const text = isBinary ? '' : data.toString('utf8');
      if (session) hub.onMessage(session, text);
      else if (early.length < 16) early.push(text);
    });
    verifyToken(app, cache, streamToken(req)).then((user) => {
      if (socket.readyState !== socket.OPEN) return;
      const token = streamToken(req)!;
      session = hub.add(socket, user.id, user.tokenVersion, user.exp === undefined ? undefined : user.exp * 1000, createHash('sha256').update(token).digest('base64url'));
      if (!session) return;
      for (const m of early.splice(0)) hub.onMessage(session, m);
      // A logout or block that landed while the token was being checked found no session to close.
      void hub.recheckUser(user.id);
    }, (err: unknown) => {
      const blocked = err instanceof DomainError && err.code === 'ACCOUNT_BLOCKED';
      if (!(err instanceof DomainError)) req.log.warn({ err }, 'stream authentication failed');
      socket.close(blocked ? CLOSE_FORBIDDEN : CLOSE_UNAUTHENTICATED, blocked ? 'account blocked' : 'unauthenticated');
    });
  };

  app.route({
    method: 'GET',
    url: '/api/v1/stream',
    schema: {
      tags: ['market'],
      summary: 'Quote stream and account events (WebSocket)',
      description: 'Upgrade to a WebSocket. Token in ?token= or Authorization. Close codes: 4401 missing/bad/expired/revoked token, 4403 blocked, 4409 replaced by a newer stream with the same token (one per token), 4429 too many streams for this user (MAX_STREAMS_PER_USER, default 5). '
        + 'Server messages: {type:"quotes",data:[quote]} (snapshot, then changes at most every QUOTE_PUSH_INTERVAL_MS; the snapshot is sent again, '
        + 'in the same shape, when the server may have missed account events for this stream — after its connection to the fan-out (Redis or PostgreSQL NOTIFY) was lost and came back: '
        + 'a client should then re-read its orders and wallets), '
        + '{type:"order_closed",data:{order}}, {type:"margin_call",data:{walletType,marginLevel,equity,margin}}, {type:"error",data:{code,message}}. '
        + 'Client message: {type:"subscribe",symbols:[...]} replaces the set of symbols.',
      querystring: Type.Object({ token: Type.Optional(Type.String({ maxLength: 4096 })) }),
    },
    // Without an Upgrade header: an enveloped answer, not the plugin's bare 404.
    handler: (_req, reply) => sendError(reply, 400, { code: 'VALIDATION_FAILED', message: 'This endpoint is a WebSocket: connect with an Upgrade request' }),
    wsHandler: connect,
  });
}
