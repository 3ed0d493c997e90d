/**
 * Fan-out between processes: publish a message on a channel, every process subscribed
 * to it gets it. Two implementations:
 *
 * - NotificationHub (db/notifications.ts): PostgreSQL LISTEN/NOTIFY, the default. Also
 *   the only one that can carry a message *inside* a transaction (pg_notify in the
 *   transaction is delivered on commit, in commit order), which some messages need.
 * - RedisPubSub (here): Redis pub/sub when REDIS_URL is set. It takes the high-volume
 *   broadcast (quotes, account events) off the database: no NOTIFY queue, no 8000-byte
 *   payload limit, no pool or listener connection of PostgreSQL spent on it.
 *
 * Both are at-most-once: a message published while a subscriber's connection is down is
 * lost for that subscriber. So both tell `onReconnect` handlers when the connection was
 * lost (`connected` is false) and again once it is back and subscribed (`connected` is
 * true); subscribers then assume they missed messages and resynchronise.
 */
import { Redis } from 'ioredis';
import type { AppLogger } from './logger.js';

export type PubSubHandler = (payload: string) => void;

export interface PubSub {
  /** `notify` (PostgreSQL LISTEN/NOTIFY) or `redis`: shown by /health. */
  readonly kind: 'notify' | 'redis';
  /** Resolves once the message was handed to the broker (not when subscribers got it). */
  publish(channel: string, payload: string): Promise<void>;
  on(channel: string, handler: PubSubHandler): void;
  /** Runs when the connection was lost and again when it is back (check `connected`). */
  onReconnect(handler: () => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly connected: boolean;
}

const CHANNEL_NAME = /^[a-z_][a-z0-9_]*$/;

/**
 * Redis pub/sub on two connections: a dedicated subscriber (a connection in subscribe
 * mode can do nothing else) and a publisher. Channels are prefixed, so several
 * deployments may share one Redis. Subscriptions are re-made by this class after a
 * reconnect (not by ioredis's autoResubscribe) so that the reconnect handlers run only
 * once the subscriptions are in place again: what they resynchronise cannot then be
 * overtaken by a message that was missed in between.
 */
export class RedisPubSub implements PubSub {
  readonly kind = 'redis' as const;
  private sub: Redis | undefined;
  private pub: Redis | undefined;
  private readonly handlers = new Map<string, PubSubHandler[]>();
  private readonly reconnectHandlers: (() => void)[] = [];
  private subscribed = false;
  /** Started: losses and returns are announced from now on. */
  private up = false;
  /** A loss was announced; the return is announced once both connections are back. */
  private lost = false;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly log: AppLogger,
    private readonly prefix = 'trading:',
  ) {}

  on(channel: string, handler: PubSubHandler): void {
    if (!CHANNEL_NAME.test(channel)) throw new Error(`bad channel name ${channel}`);
    const list = this.handlers.get(channel) ?? [];
    list.push(handler);
    this.handlers.set(channel, list);
    if (list.length === 1 && this.sub && this.subscribed) {
      this.sub.subscribe(this.prefix + channel).catch((err: unknown) => this.log.warn({ err: errInfo(err), channel }, 'redis subscribe failed'));
    }
  }

  onReconnect(handler: () => void): void {
    this.reconnectHandlers.push(handler);
  }

  get connected(): boolean {
    return this.subscribed && this.pub?.status === 'ready';
  }

  async publish(channel: string, payload: string): Promise<void> {
    if (!this.pub) throw new Error('redis pub/sub is not started');
    await this.pub.publish(this.prefix + channel, payload);
  }

  /** Connects both and subscribes; rejects when Redis cannot be reached at start-up. */
  async start(): Promise<void> {
    this.stopped = false;
    const common = { lazyConnect: true, connectTimeout: 2_000, retryStrategy: (n: number) => Math.min(100 * n, 1_000) } as const;
    // Publishing while Redis is away fails at once rather than queueing stale quotes.
    this.pub = new Redis(this.url, { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectionName: 'trading-pub' });
    this.sub = new Redis(this.url, { ...common, autoResubscribe: false, maxRetriesPerRequest: null, connectionName: 'trading-sub' });
    const pub = this.pub;
    const sub = this.sub;
    pub.on('error', (err) => this.log.warn({ err: errInfo(err) }, 'redis publisher error'));
    // What this process publishes while its publisher is away is lost for the others too.
    pub.on('close', () => this.down('publisher'));
    pub.on('ready', () => this.maybeBack());
    sub.on('error', (err) => this.log.warn({ err: errInfo(err) }, 'redis subscriber error'));
    sub.on('message', (prefixed: string, payload: string) => {
      const channel = prefixed.startsWith(this.prefix) ? prefixed.slice(this.prefix.length) : prefixed;
      for (const h of this.handlers.get(channel) ?? []) {
        try {
          h(payload);
        } catch (err) {
          this.log.error({ err, channel }, 'pub/sub handler failed');
        }
      }
    });
    sub.on('close', () => {
      this.subscribed = false;
      this.down('subscriber');
    });
    sub.on('ready', () => void this.resubscribe(sub));
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      await this.waitConnected();
      this.up = true;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private async resubscribe(sub: Redis): Promise<void> {
    const channels = [...this.handlers.keys()].map((c) => this.prefix + c);
    try {
      if (channels.length) await sub.subscribe(...channels);
    } catch (err) {
      this.log.warn({ err: errInfo(err) }, 'redis resubscribe failed; reconnecting');
      sub.disconnect(true);
      return;
    }
    if (this.stopped) return;
    this.subscribed = true;
    this.maybeBack();
  }

  /** A connection dropped: missed messages are unknown from now on (subscribers drop what they cached). */
  private down(which: string): void {
    if (this.stopped || !this.up || this.lost) return;
    this.lost = true;
    this.log.warn({ connection: which }, 'redis pub/sub connection lost');
    this.fireReconnect();
  }

  /** Both connections are back (and subscribed): subscribers resynchronise. */
  private maybeBack(): void {
    if (this.stopped || !this.up || !this.lost || !this.connected) return;
    this.lost = false;
    this.log.info('redis pub/sub reconnected');
    this.fireReconnect();
  }

  private async waitConnected(): Promise<void> {
    const deadline = Date.now() + 5_000;
    while (!this.connected) {
      if (Date.now() > deadline) throw new Error('redis pub/sub did not become ready');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private fireReconnect(): void {
    for (const h of this.reconnectHandlers) {
      try {
        h();
      } catch (err) {
        this.log.error({ err }, 'reconnect handler failed');
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.subscribed = false;
    const [pub, sub] = [this.pub, this.sub];
    this.pub = undefined;
    this.sub = undefined;
    await Promise.all([pub?.quit().catch(() => pub.disconnect()), sub?.quit().catch(() => sub.disconnect())]);
  }
}

/** ioredis errors carry the connection's options (the URL, maybe a password): log the message only. */
function errInfo(err: unknown): { message: string; code?: string } {
  const e = err as { message?: string; code?: string };
  return { message: e?.message ?? String(err), ...(e?.code ? { code: e.code } : {}) };
}
