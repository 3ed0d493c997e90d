/**
 * Account events between processes (Market): the events of one turn of a process's
 * event loop travel as one message, split under NOTIFY's 8000-byte payload limit, and
 * reach the other processes' sessions all and in order; the publisher's own sessions got
 * them at once. Two Markets on an in-memory bus, no database (the transports' own tests
 * are test/scale/*).
 */
import { describe, expect, it } from 'vitest';
import type { Db } from '../../src/platform/db/database.js';
import type { NotificationHub } from '../../src/platform/db/notifications.js';
import type { AppLogger } from '../../src/platform/logger.js';
import type { PubSub, PubSubHandler } from '../../src/platform/pubsub.js';
import { Instruments } from '../../src/modules/trading/instruments.js';
import { batchPayloads, CHANNELS, Market, MAX_PAYLOAD, quotePayloads } from '../../src/modules/trading/market.js';
import type { OrderView } from '../../src/modules/trading/order.service.js';
import { QuoteBook } from '../../src/modules/trading/quote.book.js';
import type { RiskEngine } from '../../src/modules/trading/risk.engine.js';
import type { StreamHub } from '../../src/modules/trading/stream.hub.js';

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined, child: () => silent } as unknown as AppLogger;
const turn = () => new Promise((r) => setImmediate(r));

/** One broker for every process: each published message reaches every subscriber, in order. */
function bus(kind: 'notify' | 'redis') {
  const handlers = new Map<string, PubSubHandler[]>();
  const published: { channel: string; payload: string }[] = [];
  const endpoint = (): PubSub & NotificationHub => ({
    kind,
    connected: true,
    publish: async (channel: string, payload: string) => {
      published.push({ channel, payload });
      queueMicrotask(() => { for (const h of handlers.get(channel) ?? []) h(payload); });
    },
    on: (channel: string, h: PubSubHandler) => { handlers.set(channel, [...(handlers.get(channel) ?? []), h]); },
    onReconnect: () => undefined,
    start: async () => undefined,
    stop: async () => undefined,
  }) as unknown as PubSub & NotificationHub;
  return { endpoint, published };
}

function processOn(transport: PubSub & NotificationHub) {
  const received: string[] = [];
  const streams = {
    orderClosed: (u: string, o: OrderView) => received.push(`${u} closed ${o.id}`),
    marginCall: (u: string, m: { marginLevel: string }) => received.push(`${u} margin call ${m.marginLevel}`),
    quotesChanged: () => undefined,
    resync: () => undefined,
  } as unknown as StreamHub;
  const instruments = new Instruments();
  const market = new Market({
    db: {} as Db, hub: transport, broadcast: transport, connectionString: 'postgres://unused', instruments,
    quotes: new QuoteBook(instruments), engine: {} as RiskEngine, streams, log: silent, lead: async () => undefined, unlead: async () => undefined,
  });
  return { market, received };
}

const order = (id: number): OrderView => ({
  id: String(id), symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100, walletType: 'live', openPrice: '1.08000', margin: '1080.00',
  stopLoss: '1.07000', takeProfit: null, status: 'closed', closePrice: '1.07000', profit: '-1000.00', closeReason: 'stop_loss',
  openedAt: '2026-11-26T10:00:00.000Z', closedAt: '2026-11-26T10:01:00.000Z',
}) as OrderView;

describe('account events between processes', () => {
  it("a turn's events are one message per 7,500 bytes over NOTIFY, and reach the other process all and in order", async () => {
    const b = bus('notify');
    const leader = processOn(b.endpoint());
    const follower = processOn(b.endpoint());
    const expected: string[] = [];
    for (let i = 1; i <= 200; i++) {
      leader.market.orderClosed(`u${i % 7}`, order(i)); // a tick's stop-outs
      expected.push(`u${i % 7} closed ${i}`);
      if (i % 50 === 0) {
        leader.market.marginCall(`u${i}`, { walletType: 'live', marginLevel: `${i}.00`, equity: '1.00', margin: '2.00' } as never);
        expected.push(`u${i} margin call ${i}.00`);
      }
    }
    expect(leader.received).toEqual(expected); // its own sessions at once
    expect(b.published).toHaveLength(0); // the others at the end of the turn
    await turn();
    await turn();
    const events = b.published.filter((m) => m.channel === CHANNELS.events);
    expect(events.length).toBeGreaterThan(1); // 204 events of about 400 bytes
    for (const m of events) expect(Buffer.byteLength(m.payload)).toBeLessThanOrEqual(MAX_PAYLOAD);
    // Filled: every message but the last has no room for one more event.
    for (const m of events.slice(0, -1)) expect(Buffer.byteLength(m.payload)).toBeGreaterThan(MAX_PAYLOAD - 500);
    expect(follower.received).toEqual(expected);
    expect(leader.received).toEqual(expected); // not twice: its own messages are skipped

    // The next turn's event is a message of its own.
    leader.market.orderClosed('u1', order(201));
    await turn();
    await turn();
    expect(b.published.filter((m) => m.channel === CHANNELS.events)).toHaveLength(events.length + 1);
    expect(follower.received.at(-1)).toBe('u1 closed 201');
  });

  it('over Redis (no payload limit) a turn is one message; stop() publishes what the turn had', async () => {
    const b = bus('redis');
    const leader = processOn(b.endpoint());
    const follower = processOn(b.endpoint());
    for (let i = 1; i <= 200; i++) leader.market.orderClosed('u1', order(i));
    await turn();
    await turn();
    expect(b.published.filter((m) => m.channel === CHANNELS.events)).toHaveLength(1);
    expect(follower.received).toHaveLength(200);
    leader.market.orderClosed('u2', order(300));
    await leader.market.stop(); // no turn of the event loop in between: stop() itself published it
    expect(b.published.filter((m) => m.channel === CHANNELS.events)).toHaveLength(2);
    await turn();
    expect(follower.received.at(-1)).toBe('u2 closed 300');
  });

  it('batchPayloads keeps every message under the limit and the items in order; quotePayloads writes the QuotesMessage JSON', () => {
    const items = Array.from({ length: 500 }, (_, i) => JSON.stringify({ n: i, s: 'é'.repeat(i % 40) }));
    const out = batchPayloads('{"o":"x","e":[', items, 1_000);
    expect(out.length).toBeGreaterThan(1);
    for (const p of out) expect(Buffer.byteLength(p)).toBeLessThanOrEqual(1_000);
    expect(out.flatMap((p) => (JSON.parse(p) as { e: { n: number }[] }).e.map((e) => e.n))).toEqual(items.map((_, i) => i));
    expect(batchPayloads('{"o":"x","e":[', items, Infinity)).toHaveLength(1);
    const time = new Date('2026-11-26T10:00:00.123Z');
    const rows = [{ symbol: 'EURUSD', bid: '1.08000', ask: '1.08010' }, { symbol: 'GBPUSD', bid: '1.26000', ask: '1.26015' }];
    expect(quotePayloads('p-1', time, rows)).toEqual([JSON.stringify({ o: 'p-1', t: time.toISOString(), q: rows.map((r) => [r.symbol, r.bid, r.ask]) })]);
  });
});
