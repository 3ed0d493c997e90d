/**
 * One price feed and one risk engine across every process on one database.
 *
 * Exactly one process — the market leader, elected with a PostgreSQL advisory lock
 * (leadership.ts) — runs the simulated feed and the risk engine's automatic
 * processing (stop-loss, take-profit, stop-out, margin calls). Everything else reaches
 * the other processes through LISTEN/NOTIFY (the NotificationHub):
 *
 * - `market_quotes`: every quote the leader applies (a small JSON batch per tick, split
 *   under PostgreSQL's 8000-byte payload limit). Admin quotes are notified inside their
 *   own transaction, so they reach the others on commit. Each follower sets its
 *   QuoteBook from them; the leader applied them already.
 * - `market_events`: account events (order_closed, margin_call) for a user; every
 *   process hands them to its own WebSocket sessions of that user.
 * - `market_orders`: an order opened, closed or modified by a user, notified inside its
 *   transaction (so delivered on commit, before the answer, and before any later
 *   forwarded admin quote); the leader re-reads that wallet's balance and open orders
 *   (levels included). A leader's own changes go to its engine directly after commit.
 * - `market_barrier`: before a local admin quote, the leader notifies itself and waits
 *   for its own message: every notice committed earlier (an order opened on a follower
 *   just before) has then reached its engine's queue.
 * - `market_requests` / `market_replies`: an admin quote received by a follower is
 *   forwarded to the leader with a request id; the leader applies it exactly as a local
 *   one (stored with its audit row, every triggered close committed) and replies.
 *   The follower answers the HTTP request from the reply, or 503 after 10 s.
 *   Why forward rather than evaluate on the follower with SQL: there stays one risk
 *   engine, so an admin quote and the feed's quotes are applied in one order, the
 *   leader's book does not miss closes, and triggers are evaluated by one code path.
 *
 * A process without a NotificationHub (or without a connection string) has nobody to
 * share with: it is the leader, with no election, as a single process always was.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import { DomainError, ServiceUnavailableError, type ErrorCode } from '../../platform/errors.js';
import { withHelpers, type AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import type { Instruments } from './instruments.js';
import { Leadership } from './leadership.js';
import { toOrderView, type ClosedOrder, type OrderView, type TradingObserver } from './order.service.js';
import type { OrderRow } from '../../platform/db/schema.js';
import type { WalletChangeRow } from '../wallets/ledger.repository.js';
import type { QuoteBook, QuoteView } from './quote.book.js';
import type { AccountEvents, MarginCallData, QuoteInput, RiskEngine } from './risk.engine.js';
import type { StreamHub } from './stream.hub.js';

export const CHANNELS = {
  quotes: 'market_quotes',
  events: 'market_events',
  orders: 'market_orders',
  requests: 'market_requests',
  replies: 'market_replies',
  barrier: 'market_barrier',
} as const;

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well below. */
export const MAX_PAYLOAD = 7_500;

const FORWARD_TIMEOUT_MS = 10_000;

interface QuotesMessage { o: string; t: string; q: [string, string, string][] }
type EventMessage = { o: string; u: string } & ({ k: 'order_closed'; d: OrderView } | { k: 'margin_call'; d: MarginCallData });
/** `l`: the sender was the active leader when it committed (it told its engine itself). */
interface OrderMessage { o: string; w: string; id: string; l: boolean }
interface RequestMessage { o: string; id: string; actorId: string; operationId: string; symbol: string; bid: string; ask: string }
type ReplyMessage = { to: string; id: string } & ({ ok: true; quote: QuoteView; triggered: number } | { ok: false; code: string; message: string });

export interface MarketDeps {
  db: Db;
  hub: NotificationHub | undefined;
  connectionString: string | undefined;
  instruments: Instruments;
  quotes: QuoteBook;
  engine: RiskEngine;
  streams: StreamHub;
  log: AppLogger;
  /** Starts the leader's work: quotes and open orders from the database, the engine, the feed. */
  lead(): Promise<void>;
  /** Stops it (feed, engine) and forgets the risk book. */
  unlead(): Promise<void>;
}

/** Splits quote rows into NOTIFY payloads under the limit (normally one). */
export function quotePayloads(origin: string, time: Date, rows: { symbol: string; bid: string; ask: string }[]): string[] {
  const out: string[] = [];
  const t = time.toISOString();
  let batch: [string, string, string][] = [];
  let size = 0;
  const base = JSON.stringify({ o: origin, t, q: [] }).length;
  for (const r of rows) {
    const item: [string, string, string] = [r.symbol, r.bid, r.ask];
    const len = JSON.stringify(item).length + 1;
    if (batch.length > 0 && base + size + len > MAX_PAYLOAD) {
      out.push(JSON.stringify({ o: origin, t, q: batch } satisfies QuotesMessage));
      batch = [];
      size = 0;
    }
    batch.push(item);
    size += len;
  }
  if (batch.length > 0) out.push(JSON.stringify({ o: origin, t, q: batch } satisfies QuotesMessage));
  return out;
}

export class Market implements AccountEvents {
  /** This process, in messages (its own are skipped where it already acted). */
  readonly origin = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private readonly leadership: Leadership | undefined;
  private soleLeader = false;
  private readonly waiting = new Map<string, { resolve: (r: ReplyMessage) => void; timer: NodeJS.Timeout }>();
  private readonly barriers = new Map<string, () => void>();
  private nextRequest = 0;

  constructor(private readonly d: MarketDeps) {
    const shared = d.hub !== undefined && d.connectionString !== undefined;
    if (shared) {
      this.leadership = new Leadership(d.connectionString!, 'trading:market', {
        acquire: () => d.lead(),
        release: () => d.unlead(),
      }, d.log);
      this.listen(d.hub!);
    }
    d.engine.publishQuotes = shared ? (db, rows) => this.publishQuotes(db, rows) : undefined;
  }

  get isLeader(): boolean {
    return this.leadership ? this.leadership.isLeader : this.soleLeader;
  }

  status() {
    return { leader: this.isLeader, shared: this.leadership !== undefined, terms: this.leadership?.terms ?? (this.soleLeader ? 1 : 0) };
  }

  /** Elects (one attempt, synchronously: a single process leads when this resolves), then keeps trying. */
  async start(): Promise<void> {
    if (!this.leadership) {
      await this.d.lead();
      this.soleLeader = true;
      return;
    }
    await this.leadership.start();
    // A follower's quotes come from the database, then from the leader's notifications.
    if (!this.leadership.isLeader) await this.d.quotes.load(this.d.db);
  }

  async stop(): Promise<void> {
    for (const [id, w] of this.waiting) {
      clearTimeout(w.timer);
      w.resolve({ to: this.origin, id, ok: false, code: 'SERVICE_UNAVAILABLE', message: 'The server is shutting down' });
    }
    this.waiting.clear();
    if (this.leadership) await this.leadership.stop();
    else if (this.soleLeader) {
      this.soleLeader = false;
      await this.d.unlead();
    }
  }

  // --- publishing -------------------------------------------------------------------

  private async notify(db: Db | Trx, channel: string, payload: string): Promise<void> {
    await sql`SELECT pg_notify(${channel}, ${payload})`.execute(db);
  }

  private notifyLater(channel: string, payload: string): void {
    if (!this.leadership) return;
    this.notify(this.d.db, channel, payload).catch((err: unknown) => this.d.log.warn({ err, channel }, 'could not publish'));
  }

  private async publishQuotes(db: Db | Trx, rows: { symbol: string; bid: string; ask: string; time: Date }[]): Promise<void> {
    if (rows.length === 0) return;
    for (const p of quotePayloads(this.origin, rows[0]!.time, rows)) await this.notify(db, CHANNELS.quotes, p);
  }

  // AccountEvents: the engine's events (and a follower's own closes) go to this
  // process's sessions now, and to every other process's through NOTIFY.
  orderClosed(userId: string, order: OrderView): void {
    this.d.streams.orderClosed(userId, order);
    this.notifyLater(CHANNELS.events, JSON.stringify({ o: this.origin, u: userId, k: 'order_closed', d: order } satisfies EventMessage));
  }

  marginCall(userId: string, data: MarginCallData): void {
    this.d.streams.marginCall(userId, data);
    this.notifyLater(CHANNELS.events, JSON.stringify({ o: this.origin, u: userId, k: 'margin_call', d: data } satisfies EventMessage));
  }

  /** Inside a user's order transaction: the notice for the leader (see `market_orders`). */
  async orderChanged(trx: Trx, order: { id: string; walletId: string }): Promise<void> {
    if (!this.leadership) return;
    const msg: OrderMessage = { o: this.origin, w: order.walletId, id: order.id, l: this.isLeader && this.d.engine.active };
    await this.notify(trx, CHANNELS.orders, JSON.stringify(msg));
  }

  /** The OrderService's after-commit observer: the leader's engine directly; on a follower the close's event. */
  observer(): TradingObserver {
    const engine = this.d.engine;
    const local = () => this.isLeader && engine.active;
    return {
      orderOpened: (order: OrderRow, wallet: WalletChangeRow) => {
        if (local()) engine.orderOpened(order, wallet);
      },
      orderClosed: (closed: ClosedOrder) => {
        if (local()) engine.orderClosed(closed);
        else this.orderClosed(closed.order.userId, toOrderView(closed.order));
      },
      orderModified: (order: OrderRow) => {
        if (local()) engine.orderModified(order);
      },
    };
  }

  /** Resolves when this process's listener got a message notified now (bounded: 2 s). */
  private async barrier(): Promise<void> {
    const id = `${this.origin}:b${++this.nextRequest}`;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.barriers.delete(id); resolve(); }, 2_000);
      timer.unref();
      this.barriers.set(id, () => { clearTimeout(timer); resolve(); });
      this.notify(this.d.db, CHANNELS.barrier, id).catch(() => { this.barriers.delete(id); clearTimeout(timer); resolve(); });
    });
  }

  // --- admin quotes -------------------------------------------------------------------

  /** Applies an admin quote on the leader, here or forwarded; all triggered closes are committed when it resolves. */
  async adminQuote(quote: QuoteInput, audit: { actorId: string; operationId: string; log: AppLogger }): Promise<{ quote: QuoteView; triggered: number }> {
    if (this.isLeader || !this.leadership) {
      if (this.leadership) await this.barrier();
      const r = await this.d.engine.submitAdminQuote(quote, audit);
      return { quote: this.d.quotes.view(r.quote), triggered: r.triggered };
    }
    const id = `${this.origin}:${++this.nextRequest}`;
    const reply = await new Promise<ReplyMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ to: this.origin, id, ok: false, code: 'SERVICE_UNAVAILABLE', message: 'The market leader did not answer in time' });
      }, FORWARD_TIMEOUT_MS);
      timer.unref();
      this.waiting.set(id, { resolve, timer });
      const msg: RequestMessage = { o: this.origin, id, actorId: audit.actorId, operationId: audit.operationId, symbol: quote.symbol, bid: quote.bid.toFixed(), ask: quote.ask.toFixed() };
      this.notify(this.d.db, CHANNELS.requests, JSON.stringify(msg)).catch((err: unknown) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        reject(err);
      });
    });
    if (reply.ok) return { quote: reply.quote, triggered: reply.triggered };
    if (reply.code === 'SERVICE_UNAVAILABLE') throw new ServiceUnavailableError(reply.message);
    throw new DomainError(reply.code as ErrorCode, reply.message);
  }

  // --- receiving ----------------------------------------------------------------------

  private listen(hub: NotificationHub): void {
    const parse = <T>(channel: string, payload: string): T | undefined => {
      try {
        return JSON.parse(payload) as T;
      } catch {
        this.d.log.warn({ channel }, 'malformed notification');
        return undefined;
      }
    };
    hub.on(CHANNELS.quotes, (p) => {
      const m = parse<QuotesMessage>(CHANNELS.quotes, p);
      if (!m || m.o === this.origin) return;
      const time = new Date(m.t);
      for (const [symbol, bid, ask] of m.q) {
        if (this.d.instruments.has(symbol)) this.d.quotes.set(symbol, new Decimal(bid), new Decimal(ask), time);
      }
    });
    hub.on(CHANNELS.events, (p) => {
      const m = parse<EventMessage>(CHANNELS.events, p);
      if (!m || m.o === this.origin) return;
      if (m.k === 'order_closed') this.d.streams.orderClosed(m.u, m.d);
      else if (m.k === 'margin_call') this.d.streams.marginCall(m.u, m.d);
    });
    hub.on(CHANNELS.orders, (p) => {
      const m = parse<OrderMessage>(CHANNELS.orders, p);
      if (m && this.isLeader && !(m.o === this.origin && m.l)) this.d.engine.orderChangedElsewhere(m.w);
    });
    hub.on(CHANNELS.barrier, (id) => {
      const done = this.barriers.get(id);
      this.barriers.delete(id);
      done?.();
    });
    hub.on(CHANNELS.requests, (p) => {
      const m = parse<RequestMessage>(CHANNELS.requests, p);
      if (m && this.isLeader) void this.serveRequest(m);
    });
    hub.on(CHANNELS.replies, (p) => {
      const m = parse<ReplyMessage>(CHANNELS.replies, p);
      if (!m || m.to !== this.origin) return;
      const w = this.waiting.get(m.id);
      if (!w) return;
      clearTimeout(w.timer);
      this.waiting.delete(m.id);
      w.resolve(m);
    });
    // Quotes may have been missed while the listener was away: take the stored ones.
    hub.onReconnect(() => {
      if (!this.isLeader) void this.d.quotes.load(this.d.db).catch(() => undefined);
    });
  }

  private async serveRequest(m: RequestMessage): Promise<void> {
    let reply: ReplyMessage;
    try {
      const log = withHelpers(this.d.log.child({ operationId: m.operationId }));
      const r = await this.d.engine.submitAdminQuote({ symbol: m.symbol, bid: new Decimal(m.bid), ask: new Decimal(m.ask) }, { actorId: m.actorId, operationId: m.operationId, log });
      reply = { to: m.o, id: m.id, ok: true, quote: this.d.quotes.view(r.quote), triggered: r.triggered };
    } catch (err) {
      const e = err instanceof DomainError ? err : undefined;
      if (!e) this.d.log.error({ err, operationId: m.operationId }, 'forwarded admin quote failed');
      reply = { to: m.o, id: m.id, ok: false, code: e?.code ?? 'SERVICE_UNAVAILABLE', message: e?.message ?? 'The admin quote failed on the market leader' };
    }
    await this.notify(this.d.db, CHANNELS.replies, JSON.stringify(reply)).catch((err: unknown) => this.d.log.error({ err }, 'could not reply to a forwarded admin quote'));
  }
}
