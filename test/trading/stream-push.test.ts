/**
 * StreamHub's pushes without sockets' costs hidden by a small test: thousands of
 * sessions whose writes take time. A push writes in slices and lets the event loop run
 * in between (an HTTP request is not stuck behind every write), yet every due session
 * gets the new quote exactly once, sessions closed during the push get nothing, and a
 * quote that arrives during a push goes at once to the sessions not yet written and by
 * a second push to the others. The resync after a lost fan-out connection is written in
 * slices the same way.
 */
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import type { AppLogger } from '../../src/platform/logger.js';
import { Decimal } from '../../src/platform/money.js';
import type { UserStateCache } from '../../src/modules/auth/user-state.cache.js';
import { Instruments } from '../../src/modules/trading/instruments.js';
import { QuoteBook } from '../../src/modules/trading/quote.book.js';
import { StreamHub, type Session } from '../../src/modules/trading/stream.hub.js';
import { sleep } from '../helpers/server-process.js';

/** A socket whose every write keeps the CPU busy for `costMs`. */
function slowSocket(costMs: number) {
  const received: string[] = [];
  const at: number[] = [];
  const socket = {
    readyState: 1,
    bufferedAmount: 0,
    on: () => socket,
    ping: () => undefined,
    terminate: () => undefined,
    close: () => { socket.readyState = 3; },
    send: (data: Buffer | string) => {
      const until = performance.now() + costMs;
      while (performance.now() < until) { /* a socket write's CPU */ }
      received.push(data.toString());
      at.push(Date.now());
    },
  };
  return { socket: socket as unknown as WebSocket, received, at };
}

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as AppLogger;

describe('StreamHub push', () => {
  it('writes in slices with the event loop running in between, each due session once', async () => {
    const instruments = new Instruments();
    const quotes = new QuoteBook(instruments);
    quotes.set('EURUSD', new Decimal('1.10000'), new Decimal('1.10010'), new Date());
    const hub = new StreamHub(quotes, instruments, {} as UserStateCache, 0, silent, 1);
    const pushes: number[] = [];
    hub.onPush = (n) => pushes.push(n);
    hub.start();
    const N = 3_000;
    const sockets = Array.from({ length: N }, () => slowSocket(0.02)); // 60 ms of writes in all
    const sessions: Session[] = sockets.map((x, i) => hub.add(x.socket, `u${i}`, 0, undefined, `t${i}`)!);
    expect(sockets.every((x) => x.received.length === 1)).toBe(true); // the snapshots

    quotes.set('EURUSD', new Decimal('1.10100'), new Decimal('1.10110'), new Date());
    hub.quotesChanged();
    // Turns of the event loop while the push writes: one of them must see it half done.
    const written = () => sockets.filter((x) => x.received.length > 1).length;
    let partial = 0;
    for (let i = 0; i < 1_000 && partial === 0; i++) {
      await new Promise((r) => setImmediate(r));
      if (written() > 0 && written() < N - 10) partial = written();
    }
    expect(partial).toBeGreaterThan(0);
    // Closed during the push, before their turn: nothing more is written to them.
    for (const s of sessions.slice(-10)) hub.close(s, 1000, 'bye');
    // A newer quote during the push: the sessions not yet written get it instead, at once;
    // those already written get it from a second push once the first is done.
    quotes.set('EURUSD', new Decimal('1.10200'), new Decimal('1.10210'), new Date());
    hub.quotesChanged();

    const live = sockets.slice(0, N - 10);
    const bids = (m: string) => (JSON.parse(m) as { data: { symbol: string; bid: string }[] }).data.map((q) => `${q.symbol} ${q.bid}`);
    const last = (x: { received: string[] }) => bids(x.received[x.received.length - 1]!);
    for (let i = 0; i < 300 && !(pushes.length === 2 && live.every((x) => last(x)[0] === 'EURUSD 1.10200')); i++) await sleep(10);
    hub.stop();
    let both = 0;
    for (const x of live) {
      expect(bids(x.received[0]!)).toContain('EURUSD 1.10000');
      const after = x.received.slice(1).map(bids);
      if (after.length === 2) {
        both++;
        expect(after).toEqual([['EURUSD 1.10100'], ['EURUSD 1.10200']]);
      } else expect(after).toEqual([['EURUSD 1.10200']]);
    }
    expect(both).toBeGreaterThanOrEqual(partial);
    expect(both).toBeLessThan(N - 10);
    for (const x of sockets.slice(N - 10)) expect(x.received).toHaveLength(1);
    expect(pushes).toEqual([N - 10, both]);
    expect(hub.stats.pushes).toBe(N - 10 + both);
  });

  it('counts a session\'s interval from when it was written, not from when a long push began', async () => {
    const instruments = new Instruments();
    const quotes = new QuoteBook(instruments);
    quotes.set('EURUSD', new Decimal('1.10000'), new Decimal('1.10010'), new Date());
    quotes.set('GBPUSD', new Decimal('1.26000'), new Decimal('1.26015'), new Date());
    const INTERVAL = 100;
    const hub = new StreamHub(quotes, instruments, {} as UserStateCache, INTERVAL, silent, 1);
    hub.start();
    const sockets = Array.from({ length: 1_000 }, () => slowSocket(0.15)); // a push: about 150 ms of writes
    const sessions = sockets.map((x, i) => hub.add(x.socket, `u${i}`, 0, undefined, `t${i}`)!);
    for (const s of sessions) hub.onMessage(s, JSON.stringify({ type: 'subscribe', symbols: ['EURUSD'] }));
    await sleep(INTERVAL + 10);
    quotes.set('EURUSD', new Decimal('1.10100'), new Decimal('1.10110'), new Date());
    hub.quotesChanged();
    for (let i = 0; i < 100 && !sockets.every((x) => x.received.length === 2); i++) await sleep(10);
    // The last session was written at the end of that push: its interval counts from the
    // slice that wrote it, later than the push's first write.
    const last = sockets[sockets.length - 1]!;
    const writtenAt = sessions[sessions.length - 1]!.lastPushAt;
    expect(writtenAt).toBeGreaterThan(sockets[0]!.at[1]!);
    // It now subscribes to one more symbol, which it must get, but not sooner than INTERVAL after that.
    hub.onMessage(sessions[sessions.length - 1]!, JSON.stringify({ type: 'subscribe', symbols: ['EURUSD', 'GBPUSD'] }));
    for (let i = 0; i < 50 && last.received.length < 3; i++) await sleep(10);
    hub.stop();
    expect(last.received).toHaveLength(3);
    expect(JSON.parse(last.received[2]!).data.map((q: { symbol: string }) => q.symbol)).toEqual(['GBPUSD']);
    expect(last.at[2]! - writtenAt).toBeGreaterThanOrEqual(INTERVAL);
  });

  it('resyncs in slices too: the event loop runs meanwhile, each open session gets the snapshot of its slice, a resync asked for meanwhile goes on and starves nobody', async () => {
    const instruments = new Instruments();
    const quotes = new QuoteBook(instruments);
    quotes.set('EURUSD', new Decimal('1.10000'), new Decimal('1.10010'), new Date());
    const hub = new StreamHub(quotes, instruments, {} as UserStateCache, 60_000, silent, 1); // no push gets in the way
    hub.start();
    const N = 3_000;
    const sockets = Array.from({ length: N }, () => slowSocket(0.02));
    const sessions = sockets.map((x, i) => hub.add(x.socket, `u${i}`, 0, undefined, `t${i}`)!);
    const bids = (m: string) => (JSON.parse(m) as { data: { symbol: string; bid: string }[] }).data.map((q) => `${q.symbol} ${q.bid}`);
    const written = () => sockets.filter((x) => x.received.length > 1).length;

    hub.resync();
    expect(hub.stats.resyncs).toBe(1);
    expect(written()).toBeGreaterThan(0); // the first slice runs at once
    expect(written()).toBeLessThan(N); // and not all of it
    // A quote in the middle: the sessions not yet written get it in their snapshot.
    let turns = 0;
    while (written() < N / 2 && turns < 1_000) {
      await new Promise((r) => setImmediate(r));
      turns++;
    }
    expect(turns).toBeGreaterThan(0);
    const before = written();
    quotes.set('EURUSD', new Decimal('1.10100'), new Decimal('1.10110'), new Date());
    hub.close(sessions[N - 1]!, 1000, 'bye'); // closed before its turn: nothing
    for (let i = 0; i < 500 && written() < N - 1; i++) await new Promise((r) => setImmediate(r));
    expect(written()).toBe(N - 1);
    expect(sockets.slice(0, before).every((x) => x.received.length === 2 && bids(x.received[1]!)[0] === 'EURUSD 1.10000')).toBe(true);
    expect(sockets.slice(before, N - 1).every((x) => x.received.length === 2 && bids(x.received[1]!)[0] === 'EURUSD 1.10100')).toBe(true);
    expect(sockets[N - 1]!.received).toHaveLength(1);

    // A resync asked for during one goes on with the sessions not written yet, then writes
    // the others again: every open session gets one snapshot after the last request.
    hub.resync();
    await new Promise((r) => setImmediate(r));
    const midway = sockets.filter((x) => x.received.length === 3).length;
    expect(midway).toBeGreaterThan(0);
    expect(midway).toBeLessThan(N - 1);
    expect(sockets.slice(0, midway).every((x) => x.received.length === 3)).toBe(true); // in order
    hub.resync();
    const done = () => sockets.slice(0, N - 1).every((x, i) => x.received.length === (i < midway ? 4 : 3));
    for (let i = 0; i < 1_000 && !done(); i++) await new Promise((r) => setImmediate(r));
    await sleep(20);
    expect(hub.stats.resyncs).toBe(3);
    // The first `midway` sessions got the second resync's snapshot and the third's; the others one, in the third's pass.
    expect(done()).toBe(true);

    // Resyncs asked for again and again, faster than a pass: the end of the list is not starved.
    const had = sockets.map((x) => x.received.length);
    for (let i = 0; i < 100; i++) {
      hub.resync();
      await new Promise((r) => setImmediate(r));
    }
    expect(sockets.slice(0, N - 1).filter((x, i) => x.received.length === had[i]).length).toBe(0);
    hub.stop();
    expect(hub.stats.pushes).toBe(0);
  });
});
