/**
 * One price feed and one risk engine across every process on one database.
 *
 * Exactly one process — the market leader, elected with a PostgreSQL advisory lock
 * (leadership.ts) — runs the simulated feed and the risk engine's automatic
 * processing (stop-loss, take-profit, stop-out, margin calls). Everything else reaches
 * the other processes through two transports (../../platform/pubsub.ts):
 *
 * The broadcast — Redis pub/sub when REDIS_URL is set, else LISTEN/NOTIFY — carries the
 * high-volume messages whose only order is their own:
 *
 * - `market_quotes`: every quote the leader applies (a small JSON batch per tick; over
 *   NOTIFY split under PostgreSQL's 8000-byte payload limit, over Redis one message).
 *   Each follower sets its QuoteBook from them; the leader applied them already. With
 *   NOTIFY an admin quote is notified inside its own transaction (delivered on commit);
 *   with Redis it is published right after its commit, before its triggered closes and
 *   its answer, and a forwarded one's reply carries the quote as well.
 * - `market_events`: account events (order_closed, margin_call) for a user; every
 *   process hands them to its own WebSocket sessions of that user. A process publishes
 *   the events of one turn of its event loop together (a tick's stop-outs are one
 *   message, split under NOTIFY's limit).
 * - `market_resync`: see below.
 *
 * After the broadcast's connection came back, messages may have been missed: a
 * follower reloads the stored quotes, and every process re-sends each of its WebSocket
 * sessions a snapshot, as on connect (StreamHub.resync), so a client that missed an
 * order_closed or margin_call knows to look at its account again. A process whose
 * publishing failed while its connection was away also asks every other process, once
 * it is back, to do the same (`market_resync`): their subscribers may never have lost
 * their connection, yet missed what it could not publish.
 *
 * LISTEN/NOTIFY (the NotificationHub) always carries the messages that must be ordered
 * with a transaction's commit — pg_notify inside a transaction is delivered exactly
 * when it commits, after every commit before it, and never when it rolls back; Redis
 * cannot promise any of that (a publish after commit can be lost to a crash, one before
 * commit can overtake the commit):
 *
 * - `market_orders`: an order opened, closed or modified by a user, notified before the
 *   answer, so before any admin quote sent after it: a modify inside its transaction
 *   (delivered on commit), a one-call open or close right after its COMMIT in the same
 *   round trip (a NOTIFY inside would serialise the commits); the leader re-reads that
 *   wallet's balance and open orders (levels included). A leader's own changes go to its
 *   engine directly after commit. A notice lost with its connection between the two
 *   commits is made good by the engine's periodic resync, which re-reads every wallet
 *   whose balance or margin differs from its book.
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
 * (The user_state cache invalidation stays on NOTIFY as well, for the same reason:
 * a revocation must reach every cache on its commit.)
 */
import { randomBytes } from 'node:crypto';
import { notifyOnCommit } from '../../platform/transaction.service.js';
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import type { PubSub } from '../../platform/pubsub.js';
import { DomainError, ServiceUnavailableError, type ErrorCode } from '../../platform/errors.js';
import { withHelpers, type AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import type { Instruments } from './instruments.js';
import { Leadership } from './leadership.js';
import { toOrderView, type ClosedOrder, type OpenedWallet, type OrderView, type TradingObserver } from './order.service.js';
import type { OrderRow } from '../../platform/db/schema.js';
import type { QuoteBook, QuoteView } from './quote.book.js';
import type { OrderNotice } from './trading.repository.js';
import type { AccountEvents, MarginCallData, QuoteInput, RiskEngine } from './risk.engine.js';
import type { StreamHub } from './stream.hub.js';

export const CHANNELS = {
  quotes: 'market_quotes',
  events: 'market_events',
  orders: 'market_orders',
  requests: 'market_requests',
  replies: 'market_replies',
  barrier: 'market_barrier',
  resync: 'market_resync',
} as const;

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well below. */
export const MAX_PAYLOAD = 7_500;

const FORWARD_TIMEOUT_MS = 10_000;

interface QuotesMessage { o: string; t: string; q: [string, string, string][] }
type AccountEvent = { u: string } & ({ k: 'order_closed'; d: OrderView } | { k: 'margin_call'; d: MarginCallData });
/** The account events a process published in one turn of its event loop, in order. */
interface EventsMessage { o: string; e: AccountEvent[] }
/** `l`: the sender was the active leader when it committed (it told its engine itself). */
interface OrderMessage { o: string; w: string; id: string; l: boolean }
interface RequestMessage { o: string; id: string; actorId: string; operationId: string; symbol: string; bid: string; ask: string }
type ReplyMessage = { to: string; id: string } & ({ ok: true; quote: QuoteView; triggered: number } | { ok: false; code: string; message: string });

export interface MarketDeps {
  db: Db;
  hub: NotificationHub | undefined;
  /** Quotes and account events (Redis pub/sub with REDIS_URL); the hub when undefined. */
  broadcast?: PubSub | undefined;
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

/**
 * JSON messages `head` + items + `]}` (`head` opens an object whose last member is an
 * array), each under `limit` bytes when the items allow it (NOTIFY's limit; one message
 * without a limit), the items in order.
 */
export function batchPayloads(head: string, items: string[], limit = MAX_PAYLOAD): string[] {
  const out: string[] = [];
  const base = Buffer.byteLength(head) + 2;
  let batch: string[] = [];
  let size = 0;
  for (const item of items) {
    const len = Buffer.byteLength(item) + 1;
    if (batch.length > 0 && base + size + len > limit) {
      out.push(`${head}${batch.join(',')}]}`);
      batch = [];
      size = 0;
    }
    batch.push(item);
    size += len;
  }
  if (batch.length > 0) out.push(`${head}${batch.join(',')}]}`);
  return out;
}

/** Quote rows as QuotesMessages under the limit (normally one). */
export function quotePayloads(origin: string, time: Date, rows: { symbol: string; bid: string; ask: string }[], limit = MAX_PAYLOAD): string[] {
  const head = `{"o":${JSON.stringify(origin)},"t":${JSON.stringify(time.toISOString())},"q":[`;
  return batchPayloads(head, rows.map((r) => JSON.stringify([r.symbol, r.bid, r.ask])), limit);
}

export class Market implements AccountEvents {
  /** This process, in messages (its own are skipped where it already acted). */
  readonly origin = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private readonly leadership: Leadership | undefined;
  /** Quotes and account events between processes (undefined: a single process). */
  private readonly broadcast: PubSub | undefined;
  private soleLeader = false;
  private readonly waiting = new Map<string, { resolve: (r: ReplyMessage) => void; timer: NodeJS.Timeout }>();
  private readonly barriers = new Map<string, () => void>();
  private nextRequest = 0;
  /** A publish on the broadcast failed: the others are asked to resynchronise once it is back. */
  private publishFailed = false;
  /** Publishes not yet handed to the broker (stop() waits for them). */
  private readonly publishing = new Set<Promise<void>>();
  /** Account events of this turn (JSON), published together at its end (`flushEvents`). */
  private events: string[] = [];
  private eventsFlush: NodeJS.Immediate | undefined;

  constructor(private readonly d: MarketDeps) {
    const shared = d.hub !== undefined && d.connectionString !== undefined;
    this.broadcast = shared ? d.broadcast ?? d.hub : undefined;
    if (shared) {
      this.leadership = new Leadership(d.connectionString!, 'trading:market', {
        acquire: () => d.lead(),
        release: () => d.unlead(),
      }, d.log);
      this.listen(d.hub!, this.broadcast!);
    }
    d.engine.onQuotesApplied = () => d.streams.quotesChanged();
    const broadcast = this.broadcast;
    d.engine.fanout = broadcast
      ? {
        // NOTIFY: an admin quote inside its transaction, so it is delivered on commit.
        inTransaction: async (trx, rows) => {
          if (broadcast.kind === 'notify') for (const p of quotePayloads(this.origin, rows[0]!.time, rows)) await this.notify(trx, CHANNELS.quotes, p);
        },
        publish: async (rows, admin) => {
          if (admin && broadcast.kind === 'notify') return; // sent in its transaction
          const limit = broadcast.kind === 'notify' ? MAX_PAYLOAD : Infinity;
          try {
            // Sent at once, in order, on the one connection: a later call cannot interleave.
            await Promise.all(quotePayloads(this.origin, rows[0]!.time, rows, limit).map((p) => broadcast.publish(CHANNELS.quotes, p)));
          } catch (err) {
            this.publishFailed = true;
            throw err;
          }
        },
      }
      : undefined;
  }

  get isLeader(): boolean {
    return this.leadership ? this.leadership.isLeader : this.soleLeader;
  }

  /** For /health: leadership, and the broadcast transport of quotes and events (`notify` or `redis`). */
  status() {
    return {
      leader: this.isLeader,
      shared: this.leadership !== undefined,
      terms: this.leadership?.terms ?? (this.soleLeader ? 1 : 0),
      ...(this.broadcast ? { transport: { kind: this.broadcast.kind, connected: this.broadcast.connected } } : {}),
    };
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
    this.flushEvents(); // this turn's events, and those of closes the engine finished while it stopped
    await Promise.all([...this.publishing]); // before the broadcast's connection closes
  }

  // --- publishing -------------------------------------------------------------------

  private async notify(db: Db | Trx, channel: string, payload: string): Promise<void> {
    await sql`SELECT pg_notify(${channel}, ${payload})`.execute(db);
  }

  /** An account event for the other processes: after commit, on the broadcast (lost ones are covered by the resync). */
  private publishLater(channel: string, payload: string): void {
    if (!this.broadcast) return;
    const sent = this.broadcast.publish(channel, payload).catch((err: unknown) => {
      this.publishFailed = true;
      this.d.log.warn({ err, channel }, 'could not publish');
    });
    this.publishing.add(sent);
    void sent.finally(() => this.publishing.delete(sent));
  }

  // AccountEvents: the engine's events (and a follower's own closes) go to this
  // process's sessions now, and to every other process's through the broadcast, all of a
  // turn's events in one message (split under NOTIFY's limit): a tick's stop-outs, or the
  // closes whose commits arrived together, cost one publish, not one each.
  orderClosed(userId: string, order: OrderView): void {
    this.d.streams.orderClosed(userId, order);
    this.publishEvent({ u: userId, k: 'order_closed', d: order });
  }

  marginCall(userId: string, data: MarginCallData): void {
    this.d.streams.marginCall(userId, data);
    this.publishEvent({ u: userId, k: 'margin_call', d: data });
  }

  private publishEvent(event: AccountEvent): void {
    if (!this.broadcast) return;
    this.events.push(JSON.stringify(event));
    this.eventsFlush ??= setImmediate(() => this.flushEvents());
  }

  /** Publishes the events of this turn, in order (one connection each way keeps them so). */
  private flushEvents(): void {
    if (this.eventsFlush) clearImmediate(this.eventsFlush);
    this.eventsFlush = undefined;
    const items = this.events;
    this.events = [];
    if (!this.broadcast || items.length === 0) return;
    const limit = this.broadcast.kind === 'notify' ? MAX_PAYLOAD : Infinity;
    for (const p of batchPayloads(`{"o":${JSON.stringify(this.origin)},"e":[`, items, limit)) this.publishLater(CHANNELS.events, p);
  }

  /** The notice for the leader that a one-call open or close sends right after its COMMIT (OrderService.orderNotice). */
  orderNotice(): OrderNotice | null {
    if (!this.leadership) return null;
    return { channel: CHANNELS.orders, origin: this.origin, leader: this.isLeader && this.d.engine.active };
  }

  /** Inside a user's order transaction: the notice for the leader (see `market_orders`). */
  async orderChanged(trx: Trx, order: { id: string; walletId: string }): Promise<void> {
    const n = this.orderNotice();
    if (!n) return;
    const msg: OrderMessage = { o: n.origin, w: order.walletId, id: order.id, l: n.leader };
    await notifyOnCommit(trx, n.channel, JSON.stringify(msg));
  }

  /** The OrderService's after-commit observer: the leader's engine directly; on a follower the close's event. */
  observer(): TradingObserver {
    const engine = this.d.engine;
    const local = () => this.isLeader && engine.active;
    return {
      orderOpened: (order: OrderRow, wallet: OpenedWallet) => {
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
    if (reply.ok) {
      // Over Redis the quote itself may arrive after the reply (another transport): the
      // answer must not precede this process's own book.
      this.applyQuote(reply.quote.symbol, reply.quote.bid, reply.quote.ask, new Date(reply.quote.time), true);
      this.d.streams.quotesChanged();
      return { quote: reply.quote, triggered: reply.triggered };
    }
    if (reply.code === 'SERVICE_UNAVAILABLE') throw new ServiceUnavailableError(reply.message);
    throw new DomainError(reply.code as ErrorCode, reply.message);
  }

  // --- receiving ----------------------------------------------------------------------

  /**
   * A quote from another process. Skipped when the book has this very quote already
   * (a forwarded admin quote's reply set it) or, for `onlyIfNewer`, a later one.
   */
  private applyQuote(symbol: string, bid: string, ask: string, time: Date, onlyIfNewer: boolean): void {
    if (!this.d.instruments.has(symbol)) return;
    const b = new Decimal(bid);
    const a = new Decimal(ask);
    const cur = this.d.quotes.get(symbol);
    if (cur) {
      if (onlyIfNewer && cur.time.getTime() > time.getTime()) return;
      if (cur.time.getTime() === time.getTime() && cur.bid.eq(b) && cur.ask.eq(a)) return;
    }
    this.d.quotes.set(symbol, b, a, time);
  }

  private listen(hub: NotificationHub, broadcast: PubSub): void {
    const parse = <T>(channel: string, payload: string): T | undefined => {
      try {
        return JSON.parse(payload) as T;
      } catch {
        this.d.log.warn({ channel }, 'malformed notification');
        return undefined;
      }
    };
    broadcast.on(CHANNELS.quotes, (p) => {
      const m = parse<QuotesMessage>(CHANNELS.quotes, p);
      if (!m || m.o === this.origin) return;
      const time = new Date(m.t);
      for (const [symbol, bid, ask] of m.q) this.applyQuote(symbol, bid, ask, time, false);
      this.d.streams.quotesChanged();
    });
    broadcast.on(CHANNELS.events, (p) => {
      const m = parse<EventsMessage>(CHANNELS.events, p);
      if (!m || m.o === this.origin || !Array.isArray(m.e)) return;
      for (const e of m.e) {
        if (e.k === 'order_closed') this.d.streams.orderClosed(e.u, e.d);
        else if (e.k === 'margin_call') this.d.streams.marginCall(e.u, e.d);
      }
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
    // Quotes and account events may have been missed while the broadcast was away: once
    // it is back, a follower takes the stored quotes, and every session gets a snapshot.
    broadcast.onReconnect(() => {
      if (!broadcast.connected) return; // lost: nothing to resynchronise with yet
      void this.resync();
      if (this.publishFailed) {
        this.publishFailed = false;
        broadcast.publish(CHANNELS.resync, this.origin).catch(() => (this.publishFailed = true));
      }
    });
    broadcast.on(CHANNELS.resync, (origin) => {
      if (origin !== this.origin) void this.resync();
    });
  }

  /** Quotes (a follower's, from the database) and every stream session brought up to date. */
  private async resync(): Promise<void> {
    if (!this.isLeader) await this.d.quotes.load(this.d.db).catch((err: unknown) => this.d.log.warn({ err }, 'could not reload quotes'));
    this.d.streams.resync();
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
