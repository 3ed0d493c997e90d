/**
 * The trading module: instruments, quotes, orders, the risk engine, the price feed and
 * the live stream (API.md, Trading). app.ts creates it with the other services and
 * calls registerTrading after the admin routes.
 */
import type { FastifyInstance } from 'fastify';
import type { AppDeps, Services } from '../../app.js';
import { streamRoutes } from './stream.routes.js';
import { Trading, type TradingDeps, type TradingOptions } from './trading.js';
import { tradingRoutes } from './trading.routes.js';

export { Trading } from './trading.js';
export type { CloseHook, CloseHookCall, OrderView } from './order.service.js';

export function createTrading(deps: TradingDeps, options?: TradingOptions): Trading {
  return new Trading(deps, options);
}

/** Routes, the stream, start-up (quotes, open orders, feed) and shutdown (on app close, before the pool). */
export async function registerTrading(app: FastifyInstance, services: Services, _deps: AppDeps): Promise<void> {
  const trading = services.trading;
  tradingRoutes(app, trading);
  streamRoutes(app, trading.streams, services.userCache);
  app.addHook('onClose', async () => {
    await trading.stop();
  });
  await trading.start();
}
