/**
 * PostgreSQL LISTEN/NOTIFY on one dedicated connection. Processes learn here what
 * another process changed (a user's token revocation or block, order changes for the
 * market leader, and — without REDIS_URL — quotes and account events). After a lost
 * connection it reconnects and tells its subscribers, who must then assume they missed
 * messages (caches drop everything).
 *
 * It is one of the two PubSub transports (../pubsub.ts): `publish` sends a NOTIFY on
 * this same connection (autocommit, so delivered at once, and without waiting for a
 * pool connection). A message that must be delivered on a transaction's commit is not
 * published here but with pg_notify inside that transaction.
 */
import pg from 'pg';
import type { AppLogger } from '../logger.js';
import type { PubSub } from '../pubsub.js';

type Handler = (payload: string) => void;

export class NotificationHub implements PubSub {
  readonly kind = 'notify' as const;
  private client: pg.Client | undefined;
  private readonly handlers = new Map<string, Handler[]>();
  private readonly reconnectHandlers: (() => void)[] = [];
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private listening: Promise<void> = Promise.resolve();

  constructor(
    private readonly connectionString: string,
    private readonly log: AppLogger,
  ) {}

  on(channel: string, handler: Handler): void {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad channel name ${channel}`);
    const list = this.handlers.get(channel) ?? [];
    list.push(handler);
    this.handlers.set(channel, list);
    const client = this.client;
    // One query at a time per connection: LISTENs queue behind each other.
    if (list.length === 1 && client) this.listening = this.listening.then(() => client.query(`LISTEN ${channel}`)).then(() => undefined, () => undefined);
  }

  async publish(channel: string, payload: string): Promise<void> {
    const client = this.client;
    if (!client) throw new Error('notification listener not connected');
    await client.query('SELECT pg_notify($1, $2)', [channel, payload]);
  }

  onReconnect(handler: () => void): void {
    this.reconnectHandlers.push(handler);
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect(false);
  }

  private async connect(isReconnect: boolean): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString, application_name: 'trading-backend-listener' });
    client.on('notification', (msg) => {
      for (const h of this.handlers.get(msg.channel) ?? []) {
        try {
          h(msg.payload ?? '');
        } catch (err) {
          this.log.error({ err, channel: msg.channel }, 'notification handler failed');
        }
      }
    });
    client.on('error', () => this.scheduleReconnect(client));
    client.on('end', () => this.scheduleReconnect(client));
    try {
      await client.connect();
      for (const channel of this.handlers.keys()) await client.query(`LISTEN ${channel}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      if (!isReconnect) throw err;
      this.scheduleReconnect(undefined);
      return;
    }
    this.client = client;
    if (isReconnect) {
      this.log.info('notification listener reconnected');
      for (const h of this.reconnectHandlers) h();
    }
  }

  private scheduleReconnect(failed: pg.Client | undefined): void {
    if (this.stopped || this.retryTimer || (failed && failed !== this.client)) return;
    this.client = undefined;
    // Missed messages are unknown: subscribers drop what they cached right away.
    for (const h of this.reconnectHandlers) h();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect(true);
    }, 1000);
    this.retryTimer.unref();
  }

  get connected(): boolean {
    return this.client !== undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
