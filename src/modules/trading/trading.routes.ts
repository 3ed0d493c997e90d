import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { OrderStatus, WalletType } from '../../platform/db/schema.js';
import { sendData, sendOutcome } from '../../platform/http/envelope.js';
import { EmptyBody, IdempotencyKeyHeader } from '../../platform/http/schemas.js';
import { asAppLogger } from '../../platform/logger.js';
import type { ModifyOrderInput, PlaceOrderInput } from './order.service.js';
import { AdminQuoteBody, ModifyOrderBody, OrderIdParams, OrderListQuery, PlaceOrderBody } from './trading.schemas.js';
import type { Trading } from './trading.js';

export function tradingRoutes(app: FastifyInstance, trading: Trading) {
  const ctx = (req: FastifyRequest) => ({ userId: req.authUser!.id, operationId: req.id, log: asAppLogger(req.log) });
  const orders = trading.orders;

  app.get('/api/v1/symbols', { schema: { tags: ['market'], summary: 'Tradable instruments (no token needed)' } }, async (_req, reply) =>
    sendData(reply, 200, { items: trading.symbols() }));

  app.get('/api/v1/quotes', { schema: { tags: ['market'], summary: 'The latest quote of each symbol (no token needed)' } }, async (_req, reply) =>
    sendData(reply, 200, { items: trading.quoteViews() }));

  app.post<{ Body: PlaceOrderInput }>('/api/v1/orders', {
    config: { auth: true, idempotent: true },
    schema: { tags: ['trading'], summary: 'Open a market order (buy at the ask, sell at the bid)', headers: IdempotencyKeyHeader, body: PlaceOrderBody },
  }, async (req, reply) => sendOutcome(reply, await orders.placeOrder(req.idempotencyKey!, ctx(req), req.body)));

  app.get<{ Querystring: { limit: number; cursor?: string; status?: OrderStatus; walletType?: WalletType } }>('/api/v1/orders', {
    config: { auth: true },
    schema: { tags: ['trading'], summary: "The user's orders, newest first", querystring: OrderListQuery },
  }, async (req, reply) => sendData(reply, 200, await orders.listOrders(req.authUser!.id, req.query)));

  app.get<{ Params: { id: string } }>('/api/v1/orders/:id', {
    config: { auth: true, resourceParams: { id: 'id' } },
    schema: { tags: ['trading'], summary: 'One order of the user', params: OrderIdParams },
  }, async (req, reply) => sendData(reply, 200, await orders.getOrder(req.authUser!.id, req.params.id)));

  app.post<{ Params: { id: string } }>('/api/v1/orders/:id/close', {
    config: { auth: true, idempotent: true, resourceParams: { id: 'id' } },
    schema: { tags: ['trading'], summary: 'Close an open order (buy at the bid, sell at the ask)', params: OrderIdParams, headers: IdempotencyKeyHeader, body: EmptyBody },
  }, async (req, reply) => sendOutcome(reply, await orders.closeOrder(req.idempotencyKey!, ctx(req), req.params.id)));

  app.patch<{ Params: { id: string }; Body: ModifyOrderInput }>('/api/v1/orders/:id', {
    config: { auth: true, idempotent: true, resourceParams: { id: 'id' } },
    schema: { tags: ['trading'], summary: 'Set or remove stop-loss / take-profit', params: OrderIdParams, headers: IdempotencyKeyHeader, body: ModifyOrderBody },
  }, async (req, reply) => sendOutcome(reply, await orders.modifyOrder(req.idempotencyKey!, ctx(req), req.params.id, req.body)));

  app.post<{ Body: { symbol: string; bid: string; ask: string } }>('/api/v1/admin/quotes', {
    config: { auth: true, admin: true },
    schema: { tags: ['admin'], summary: 'Set a price; the stop-loss, take-profit and stop-out closes it triggers commit before the response', body: AdminQuoteBody },
  }, async (req, reply) => sendData(reply, 200, await trading.setAdminQuote({ actorId: req.authUser!.id, operationId: req.id, log: asAppLogger(req.log) }, req.body)));
}
