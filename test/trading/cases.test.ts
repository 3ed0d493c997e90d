/**
 * The exact cases: buy and sell on each default symbol, margin at several leverages
 * (rounded up to the cent), profit and loss rounded half-to-even, and API.md's worked
 * example — each opened and closed through the API, with the wallet checked to the cent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decimal } from '../../src/platform/money.js';
import { profitOf, requiredMargin } from '../../src/modules/trading/pricing.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { close, expectReconciled, fundedUser, makeAdmin, open, setQuote, transactions, wallet, type User } from './helpers.js';

let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
});
afterAll(async () => { await t?.close(); });

interface Case {
  name: string;
  symbol: string;
  side: 'buy' | 'sell';
  volume: string;
  leverage?: number;
  openQuote: [string, string];
  openPrice: string;
  margin: string;
  closeQuote: [string, string];
  closePrice: string;
  profit: string;
}

const cases: Case[] = [
  // API.md's worked example
  { name: 'worked example', symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100, openQuote: ['1.08000', '1.08010'], openPrice: '1.08010', margin: '1080.10', closeQuote: ['1.08110', '1.08120'], closePrice: '1.08110', profit: '100.00' },
  { name: 'EURUSD sell, default leverage 100', symbol: 'EURUSD', side: 'sell', volume: '1.00', openQuote: ['1.08000', '1.08010'], openPrice: '1.08000', margin: '1080.00', closeQuote: ['1.07900', '1.07910'], closePrice: '1.07910', profit: '90.00' },
  { name: 'EURUSD buy at 500: 2.1602 rounds up', symbol: 'EURUSD', side: 'buy', volume: '0.01', leverage: 500, openQuote: ['1.08000', '1.08010'], openPrice: '1.08010', margin: '2.17', closeQuote: ['1.07995', '1.08005'], closePrice: '1.07995', profit: '-0.15' },
  { name: 'EURUSD buy at 3: 360.0333… rounds up', symbol: 'EURUSD', side: 'buy', volume: '0.01', leverage: 3, openQuote: ['1.08000', '1.08010'], openPrice: '1.08010', margin: '360.04', closeQuote: ['1.08000', '1.08010'], closePrice: '1.08000', profit: '-0.10' },
  { name: 'EURUSD sell at 7: 462.857… rounds up', symbol: 'EURUSD', side: 'sell', volume: '0.03', leverage: 7, openQuote: ['1.08000', '1.08010'], openPrice: '1.08000', margin: '462.86', closeQuote: ['1.08110', '1.08123'], closePrice: '1.08123', profit: '-3.69' },
  { name: 'GBPUSD buy at 500', symbol: 'GBPUSD', side: 'buy', volume: '1.00', leverage: 500, openQuote: ['1.26000', '1.26015'], openPrice: '1.26015', margin: '252.03', closeQuote: ['1.25015', '1.25030'], closePrice: '1.25015', profit: '-1000.00' },
  { name: 'GBPUSD sell', symbol: 'GBPUSD', side: 'sell', volume: '0.10', leverage: 100, openQuote: ['1.26000', '1.26015'], openPrice: '1.26000', margin: '126.00', closeQuote: ['1.25485', '1.25500'], closePrice: '1.25500', profit: '50.00' },
  { name: 'XAUUSD buy at 200: 10.002 rounds up', symbol: 'XAUUSD', side: 'buy', volume: '0.01', leverage: 200, openQuote: ['2000.00', '2000.40'], openPrice: '2000.40', margin: '10.01', closeQuote: ['2001.00', '2001.40'], closePrice: '2001.00', profit: '0.60' },
  { name: 'XAUUSD sell at 3', symbol: 'XAUUSD', side: 'sell', volume: '1.00', leverage: 3, openQuote: ['2000.00', '2000.40'], openPrice: '2000.00', margin: '66666.67', closeQuote: ['2009.95', '2010.35'], closePrice: '2010.35', profit: '-1035.00' },
  { name: 'XAUUSD default leverage 100', symbol: 'XAUUSD', side: 'buy', volume: '0.50', openQuote: ['2000.00', '2000.40'], openPrice: '2000.40', margin: '1000.20', closeQuote: ['1999.00', '1999.40'], closePrice: '1999.00', profit: '-70.00' },
  { name: 'BTCUSD buy at 20: exact margin; +0.005 rounds to 0.00', symbol: 'BTCUSD', side: 'buy', volume: '0.01', leverage: 20, openQuote: ['60000.00', '60020.00'], openPrice: '60020.00', margin: '30.01', closeQuote: ['60020.50', '60040.50'], closePrice: '60020.50', profit: '0.00' },
  { name: 'BTCUSD buy at 7; +0.015 rounds to 0.02', symbol: 'BTCUSD', side: 'buy', volume: '0.01', leverage: 7, openQuote: ['60000.00', '60020.00'], openPrice: '60020.00', margin: '85.75', closeQuote: ['60021.50', '60041.50'], closePrice: '60021.50', profit: '0.02' },
  { name: 'BTCUSD buy at 1; +0.035 rounds to 0.04', symbol: 'BTCUSD', side: 'buy', volume: '0.01', leverage: 1, openQuote: ['60000.00', '60020.00'], openPrice: '60020.00', margin: '600.20', closeQuote: ['60023.50', '60043.50'], closePrice: '60023.50', profit: '0.04' },
  { name: 'BTCUSD sell, default leverage 20; -0.025 rounds to -0.02', symbol: 'BTCUSD', side: 'sell', volume: '0.01', openQuote: ['60000.00', '60020.00'], openPrice: '60000.00', margin: '30.00', closeQuote: ['59982.50', '60002.50'], closePrice: '60002.50', profit: '-0.02' },
  { name: 'BTCUSD sell; -0.045 rounds to -0.04', symbol: 'BTCUSD', side: 'sell', volume: '0.01', leverage: 10, openQuote: ['60000.00', '60020.00'], openPrice: '60000.00', margin: '60.00', closeQuote: ['59984.50', '60004.50'], closePrice: '60004.50', profit: '-0.04' },
  { name: 'BTCUSD sell 0.03; +0.015 rounds to 0.02', symbol: 'BTCUSD', side: 'sell', volume: '0.03', leverage: 20, openQuote: ['60000.00', '60020.00'], openPrice: '60000.00', margin: '90.00', closeQuote: ['59979.50', '59999.50'], closePrice: '59999.50', profit: '0.02' },
];

describe('exact cases through the API', () => {
  it.each(cases)('$name', async (c) => {
    const u = await fundedUser(t.app, '100000.00');
    await setQuote(t, admin, c.symbol, ...c.openQuote);
    const o = await open(t, u, { symbol: c.symbol, side: c.side, volume: c.volume, ...(c.leverage ? { leverage: c.leverage } : {}) });
    expect(o.openPrice).toBe(c.openPrice);
    expect(o.margin).toBe(c.margin);
    expect(o.volume).toBe(c.volume);
    expect(o.status).toBe('open');
    const w1 = await wallet(t, u);
    expect(w1.balance).toBe('100000.00');
    expect(w1.margin).toBe(c.margin);

    await setQuote(t, admin, c.symbol, ...c.closeQuote);
    const r = await close(t, u, o.id);
    expect(r.status).toBe(200);
    const closed = r.body.data.order;
    expect(closed.status).toBe('closed');
    expect(closed.closeReason).toBe('user');
    expect(closed.closePrice).toBe(c.closePrice);
    expect(closed.profit).toBe(c.profit);
    const balance = new Decimal('100000.00').plus(c.profit).toFixed(2);
    expect(r.body.data.wallet).toMatchObject({ balance, margin: '0.00', equity: balance, freeMargin: balance, marginLevel: null, realizedProfit: c.profit });

    const trade = (await transactions(t, u)).filter((x) => x.orderId === o.id);
    if (c.profit === '0.00') expect(trade).toEqual([]); // nothing is posted for exactly 0.00
    else {
      expect(trade).toHaveLength(1);
      expect(trade[0]).toMatchObject({ type: c.profit.startsWith('-') ? 'trade_loss' : 'trade_profit', amount: c.profit, balanceAfter: balance });
    }
  });

  it('reconciles after all of them', async () => {
    await expectReconciled(t, admin);
  });
});

describe('pricing arithmetic', () => {
  const d = (s: string) => new Decimal(s);
  it.each([
    ['1.00', '100000', '1.08010', 100, '1080.10'],
    ['0.01', '100000', '1.08010', 500, '2.17'],
    ['0.01', '1', '60020.00', 20, '30.01'],
    ['0.01', '1', '60020.00', 7, '85.75'],
    ['0.03', '1', '60000.01', 3, '600.01'], // 1800.0003 / 3 = 600.0001: a hundredth of a cent still rounds up
    ['0.03', '1', '60000.00', 3, '600.00'], // exactly 600: no rounding
  ])('margin of %s lots × %s at %s / %i', (volume, cs, price, leverage, expected) => {
    const m = requiredMargin(d(volume), d(cs), d(price), leverage);
    // exact check independent of the implementation: m ≥ notional / leverage > m − 0.01
    const exact = d(volume).times(cs).times(price).div(leverage);
    expect(m.gte(exact)).toBe(true);
    expect(m.minus('0.01').lt(exact)).toBe(true);
    expect(m.toFixed(2)).toBe(expected);
  });

  it('rounds profit half to even', () => {
    expect(profitOf('buy', d('60020.00'), d('60020.50'), d('0.01'), d('1')).toFixed(2)).toBe('0.00');
    expect(profitOf('buy', d('60020.00'), d('60021.50'), d('0.01'), d('1')).toFixed(2)).toBe('0.02');
    expect(profitOf('sell', d('60000.00'), d('60002.50'), d('0.01'), d('1')).toFixed(2)).toBe('-0.02');
    expect(profitOf('sell', d('60000.00'), d('60003.50'), d('0.01'), d('1')).toFixed(2)).toBe('-0.04');
  });
});
