/**
 * The WebSocket sessions of GET /api/v1/stream. Quotes are conflated: each session gets
 * a snapshot on connect, then at most every QUOTE_PUSH_INTERVAL_MS the latest quote of
 * each subscribed symbol that changed since its last message. A new quote is pushed at
 * once to every session whose interval has passed (quotesChanged), not at the next
 * tick: a quote's age on arrival is then the engine's and the network's, not the
 * timer's; the tick only serves sessions that were not due yet when it came. Sessions that would get
 * the same bytes share one serialization (all subscribed to the same set and last
 * served at the same quote sequence), so 33,000 sessions cost a few JSON.stringify
 * calls per push, not 33,000; the writes themselves run in slices of about 10 ms so that
 * HTTP requests are served in between. Account events go only to the sessions of their
 * user.
 */
import type { WebSocket } from 'ws';
import type { AppLogger } from '../../platform/logger.js';
import type { UserStateCache } from '../auth/user-state.cache.js';
import type { Instruments } from './instruments.js';
import type { OrderView } from './order.service.js';
import type { Quote, QuoteBook } from './quote.book.js';
import type { AccountEvents, MarginCallData } from './risk.engine.js';

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_GOING_AWAY = 1001;
/** A newer stream opened with the same token took this one's place. */
export const CLOSE_REPLACED = 4409;
/** The user already has the most streams allowed. */
export const CLOSE_TOO_MANY = 4429;

/** A session whose socket holds more than this unsent is skipped for a push (it gets the latest later). */
const MAX_BUFFERED = 1 << 20;

export interface Session {
  socket: WebSocket;
  userId: string;
  tokenVersion: number;
  /** Hash of the token: one open stream per token. */
  tokenKey: string;
  /** Subscribed symbols; undefined = all. */
  symbols: Set<string> | undefined;
  /** Sorted symbols joined, '*' for all: sessions with equal keys get equal messages. */
  subKey: string;
  /** Quote sequence this session has been served up to. */
  lastSeq: number;
  lastPushAt: number;
  /** Symbols to send on the next push whether they changed or not (newly subscribed). */
  forced: Set<string>;
  expiry: NodeJS.Timeout | undefined;
  closed: boolean;
  /** Answered the last ping (dead peers are dropped by the heartbeat). */
  alive: boolean;
}

const HEARTBEAT_MS = 30_000;
/** A push (or a resync) writes to sessions for about this long before it lets the event loop run (see push); when both run, each takes a slice per turn. */
const PUSH_SLICE_MS = 10;

export class StreamHub implements AccountEvents {
  private readonly byUser = new Map<string, Set<Session>>();
  private readonly byToken = new Map<string, Session>();
  private readonly sessions = new Set<Session>();
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** The next slice of the push in progress (`pushing`); `pushAgain`: a push was asked for meanwhile. */
  private slicing: NodeJS.Immediate | undefined;
  private pushing = false;
  private pushAgain = false;
  /** The resync in progress: the sessions it writes and how far it got; its next slice. */
  private resyncing: { sessions: Session[]; next: number; written: number } | undefined;
  private resyncSlice: NodeJS.Immediate | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Messages sent, for tests and metrics. */
  readonly stats = { connected: 0, pushes: 0, events: 0, resyncs: 0 };
  /** Called after each push that sent something: sessions written and the push's duration (metrics). */
  onPush: ((sessions: number, seconds: number) => void) | undefined;

  constructor(
    private readonly quotes: QuoteBook,
    private readonly instruments: Instruments,
    private readonly cache: UserStateCache,
    private readonly intervalMs: number,
    private readonly log: AppLogger,
    private readonly maxPerUser = 5,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  start(): void {
    // Serves sessions that were not due when a quote came: at most 50 ms after they are.
    // Each session is still served at most once per interval.
    const tick = Math.max(5, Math.min(50, Math.floor(this.intervalMs / 4)));
    this.timer = setInterval(() => this.push(), tick);
    this.timer.unref();
    // A peer gone without a FIN would hold its session for ever: ping, and drop who did not answer.
    this.heartbeat = setInterval(() => {
      for (const s of [...this.sessions]) {
        if (!s.alive) {
          this.remove(s);
          s.socket.terminate();
          continue;
        }
        s.alive = false;
        s.socket.ping();
      }
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Stops pushing and closes every session (shutdown). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.immediate) clearImmediate(this.immediate);
    if (this.slicing) clearImmediate(this.slicing);
    if (this.resyncSlice) clearImmediate(this.resyncSlice);
    this.timer = undefined;
    this.immediate = undefined;
    this.slicing = undefined;
    this.resyncSlice = undefined;
    this.resyncing = undefined;
    this.pushing = false;
    this.pushAgain = false;
    this.heartbeat = undefined;
    for (const s of [...this.sessions]) this.close(s, CLOSE_GOING_AWAY, 'server shutting down');
  }

  /**
   * Registers an authenticated session and sends its snapshot. One open stream per
   * token (a newer one replaces the older) and at most `maxPerUser` per user (more are
   * refused with 4429); undefined when refused.
   */
  add(socket: WebSocket, userId: string, tokenVersion: number, expiresAt: number | undefined, tokenKey: string): Session | undefined {
    const previous = this.byToken.get(tokenKey);
    if (previous) this.close(previous, CLOSE_REPLACED, 'replaced by a newer stream with the same token');
    if ((this.byUser.get(userId)?.size ?? 0) >= this.maxPerUser) {
      socket.close(CLOSE_TOO_MANY, `at most ${this.maxPerUser} streams per user`);
      return undefined;
    }
    const s: Session = {
      socket, userId, tokenVersion, tokenKey, symbols: undefined, subKey: '*', lastSeq: this.quotes.seq, lastPushAt: Date.now(),
      forced: new Set(), expiry: undefined, closed: false, alive: true,
    };
    socket.on('pong', () => (s.alive = true));
    this.sessions.add(s);
    this.byToken.set(tokenKey, s);
    let set = this.byUser.get(userId);
    if (!set) this.byUser.set(userId, (set = new Set()));
    set.add(s);
    this.stats.connected++;
    if (expiresAt !== undefined) {
      const ms = Math.min(Math.max(expiresAt - Date.now(), 0), 2 ** 31 - 1);
      s.expiry = setTimeout(() => this.close(s, CLOSE_UNAUTHENTICATED, 'token expired'), ms);
      s.expiry.unref();
    }
    socket.on('close', () => this.remove(s));
    this.send(s, this.quotesMessage(this.quotes.list()));
    return s;
  }

  /** A client message: only `subscribe` exists; anything else gets an error message. */
  onMessage(s: Session, raw: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(raw);
    } catch {
      return this.error(s, 'VALIDATION_FAILED', 'Messages must be JSON');
    }
    const m = msg as { type?: unknown; symbols?: unknown };
    if (m === null || typeof m !== 'object' || m.type !== 'subscribe') return this.error(s, 'VALIDATION_FAILED', 'Unknown message type; expected {"type":"subscribe","symbols":[...]}');
    if (!Array.isArray(m.symbols) || m.symbols.some((x) => typeof x !== 'string') || m.symbols.length > 1000) {
      return this.error(s, 'VALIDATION_FAILED', 'symbols must be an array of symbol names');
    }
    const wanted = m.symbols as string[];
    const unknown = wanted.filter((x) => !this.instruments.has(x));
    if (unknown.length) return this.error(s, 'UNKNOWN_SYMBOL', `Unknown symbols: ${unknown.join(', ')}`, unknown);
    const before = s.symbols;
    s.symbols = new Set(wanted);
    s.subKey = [...s.symbols].sort().join(',');
    for (const x of s.symbols) if (before && !before.has(x)) s.forced.add(x);
    for (const x of s.forced) if (!s.symbols.has(x)) s.forced.delete(x);
  }

  private error(s: Session, code: string, message: string, symbols?: string[]): void {
    this.send(s, JSON.stringify({ type: 'error', data: symbols ? { code, message, symbols } : { code, message } }));
  }

  // --- account events -------------------------------------------------------------

  orderClosed(userId: string, order: OrderView): void {
    this.toUser(userId, { type: 'order_closed', data: { order } });
  }

  marginCall(userId: string, data: MarginCallData): void {
    this.toUser(userId, { type: 'margin_call', data });
  }

  private toUser(userId: string, message: unknown): void {
    const set = this.byUser.get(userId);
    if (!set) return;
    const text = JSON.stringify(message);
    for (const s of set) this.send(s, text);
    this.stats.events++;
  }

  // --- revocation -----------------------------------------------------------------

  /** The user's state changed (logout, password, block): sessions whose token no longer holds close. */
  async recheckUser(userId: string): Promise<void> {
    const set = this.byUser.get(userId);
    if (!set || set.size === 0) return;
    let state;
    try {
      state = await this.cache.get(userId);
    } catch (err) {
      this.log.warn({ err, userId }, 'could not re-check stream sessions');
      return;
    }
    for (const s of [...set]) {
      if (!state || state.tokenVersion !== s.tokenVersion) this.close(s, CLOSE_UNAUTHENTICATED, 'token revoked');
      else if (state.blocked) this.close(s, CLOSE_FORBIDDEN, 'account blocked');
    }
  }

  close(s: Session, code: number, reason: string): void {
    if (s.closed) return;
    this.remove(s);
    try {
      s.socket.close(code, reason);
    } catch {
      s.socket.terminate();
    }
  }

  private remove(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    if (s.expiry) clearTimeout(s.expiry);
    this.sessions.delete(s);
    if (this.byToken.get(s.tokenKey) === s) this.byToken.delete(s.tokenKey);
    const set = this.byUser.get(s.userId);
    set?.delete(s);
    if (set?.size === 0) this.byUser.delete(s.userId);
  }

  /** The `quotes` message of these quotes, encoded once for every session that gets it. */
  private quotesMessage(items: Quote[]): Buffer {
    return Buffer.from(JSON.stringify({ type: 'quotes', data: items.map((q) => this.quotes.view(q)) }));
  }

  /**
   * A Buffer is sent as a text frame as is: a push encodes its JSON to UTF-8 once for all
   * the sessions that share it, not once per socket.
   */
  private send(s: Session, data: string | Buffer): void {
    if (s.closed || s.socket.readyState !== 1 /* OPEN */) return;
    s.socket.send(data, { binary: false });
  }

  // --- resynchronisation -------------------------------------------------------------

  /**
   * Sends every session a snapshot, as on connect: the latest quote of each subscribed
   * symbol (all by default). Called when this process's fan-out connection came back
   * after a loss: account events (order_closed, margin_call) published meanwhile never
   * reached it, so its sessions are told the current state and their clients re-read
   * their account. Sessions with the same subscription share one serialization.
   *
   * Like a push, it writes in slices of about PUSH_SLICE_MS with the event loop's turn
   * in between, each slice the book of its own moment; a session closed meanwhile is
   * skipped. A resync asked for during one goes on with the sessions not written yet and
   * then writes again those written already (they may have missed something since), so
   * every open session gets one snapshot after the latest request, and repeated requests
   * cannot starve the end of the list.
   */
  resync(): void {
    this.stats.resyncs++;
    const r = this.resyncing;
    if (r === undefined) {
      this.resyncing = { sessions: [...this.sessions], next: 0, written: 0 };
      this.resyncStep();
      return;
    }
    // The pending slice goes on with the new list.
    const rest = r.sessions.slice(r.next);
    const pending = new Set(rest);
    for (const s of this.sessions) if (!pending.has(s)) rest.push(s);
    this.resyncing = { sessions: rest, next: 0, written: r.written };
  }

  private resyncStep(): void {
    this.resyncSlice = undefined;
    const r = this.resyncing;
    if (r === undefined) return;
    let more = false;
    try {
      const seq = this.quotes.seq;
      const now = Date.now();
      const all = this.quotes.list();
      const texts = new Map<string, Buffer>();
      const until = performance.now() + PUSH_SLICE_MS;
      while (r.next < r.sessions.length) {
        const s = r.sessions[r.next++]!;
        if (!s.closed) {
          let text = texts.get(s.subKey);
          if (text === undefined) {
            const items = s.symbols === undefined ? all : all.filter((q) => s.symbols!.has(q.symbol));
            text = this.quotesMessage(items);
            texts.set(s.subKey, text);
          }
          s.lastSeq = seq;
          s.forced.clear();
          s.lastPushAt = now;
          this.send(s, text);
          r.written++;
        }
        if ((r.next & 63) === 0 && performance.now() >= until) break;
      }
      more = r.next < r.sessions.length;
      if (more) this.resyncSlice = setImmediate(() => this.resyncStep());
    } finally {
      if (!more) this.resyncing = undefined; // also when a slice threw: the next resync starts afresh
    }
    if (!more) this.log.info({ sessions: r.written }, 'stream sessions resynchronised');
  }

  // --- conflated quote pushes -------------------------------------------------------

  /** New quotes were applied: push to the sessions that are due, once the current batch is in. */
  quotesChanged(): void {
    if (!this.timer || this.immediate) return;
    this.immediate = setImmediate(() => {
      this.immediate = undefined;
      this.push();
    });
  }

  /**
   * Writes the latest quotes to every session that is due. The writes run in slices of
   * about PUSH_SLICE_MS with the event loop's turn in between: with 16,000 sessions a
   * push takes most of a second of CPU, and HTTP requests and database replies must not
   * wait behind all of it. Each slice sends the book as it is then, so a quote that came
   * during the push reaches the sessions not yet written at once; the sessions already
   * written get it at their next push, which is made when this one ends.
   */
  private push(): void {
    if (this.pushing) {
      this.pushAgain = true;
      return;
    }
    const due: Session[] = [];
    const at = Date.now();
    for (const s of this.sessions) if (this.isDue(s, this.quotes.seq, at)) due.push(s);
    if (due.length === 0) return;
    this.pushing = true;
    const started = performance.now();
    let seq = -1;
    let quotes: Quote[] = [];
    const cache = new Map<string, Buffer | null>();
    let next = 0;
    let sent = 0;
    const slice = () => {
      this.slicing = undefined;
      let more = false;
      try {
        if (this.quotes.seq !== seq) {
          seq = this.quotes.seq;
          quotes = this.quotes.list();
          cache.clear();
        }
        // The slice's own clock: a session written late in a long push counts its interval from then.
        const now = Date.now();
        const until = performance.now() + PUSH_SLICE_MS;
        while (next < due.length) {
          const s = due[next++]!;
          // Closed, resynchronised or served meanwhile: skipped.
          if (!s.closed && this.isDue(s, seq, now) && this.serve(s, seq, now, quotes, cache)) sent++;
          if ((next & 63) === 0 && performance.now() >= until) break;
        }
        more = next < due.length && this.timer !== undefined;
        if (more) this.slicing = setImmediate(slice);
      } finally {
        if (!more) this.pushDone(sent, started);
      }
    };
    slice();
  }

  /** The push in progress is over (also when a slice threw): report it, then make the push asked for meanwhile, after a turn of the event loop. */
  private pushDone(sent: number, started: number): void {
    this.pushing = false;
    if (sent > 0) this.onPush?.(sent, (performance.now() - started) / 1000);
    if (this.pushAgain) {
      this.pushAgain = false;
      this.quotesChanged(); // the next push, after a turn of the event loop (merged with one already asked for)
    }
  }

  private isDue(s: Session, seq: number, now: number): boolean {
    return (s.lastSeq < seq || s.forced.size > 0) && now - s.lastPushAt >= this.intervalMs && s.socket.bufferedAmount <= MAX_BUFFERED;
  }

  /** Sends a session what changed since its last message (sessions in the same state share one encoding); false when nothing it subscribes to did. */
  private serve(s: Session, seq: number, now: number, quotes: Quote[], cache: Map<string, Buffer | null>): boolean {
    let text: Buffer | null | undefined;
    const key = s.forced.size === 0 ? `${s.subKey}|${s.lastSeq}` : undefined;
    if (key !== undefined) text = cache.get(key);
    if (text === undefined) {
      const items = quotes.filter((q) => (s.symbols === undefined || s.symbols.has(q.symbol)) && (q.seq > s.lastSeq || s.forced.has(q.symbol)));
      text = items.length === 0 ? null : this.quotesMessage(items);
      if (key !== undefined) cache.set(key, text);
    }
    s.lastSeq = seq;
    s.forced.clear();
    if (text === null) return false; // only unsubscribed symbols changed
    s.lastPushAt = now;
    this.send(s, text);
    this.stats.pushes++;
    return true;
  }
}
