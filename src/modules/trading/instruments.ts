/**
 * Instruments: the symbols that can be traded, with their contract terms. The
 * defaults are API.md's; SYMBOLS in the environment replaces them.
 */
import type { SymbolSpec } from '../../config.js';
import { Decimal } from '../../platform/money.js';

export interface Instrument {
  symbol: string;
  contractSize: Decimal;
  /** Decimals of a price. */
  digits: number;
  minVolume: Decimal;
  maxVolume: Decimal;
  volumeStep: Decimal;
  maxLeverage: number;
  /** The quote used when none has been stored yet; none → NO_QUOTE until one is set. */
  startBid?: Decimal;
  startAsk?: Decimal;
}

export const DEFAULT_SYMBOLS: SymbolSpec[] = [
  { symbol: 'EURUSD', contractSize: '100000', digits: 5, maxLeverage: 500, bid: '1.08000', ask: '1.08010' },
  { symbol: 'GBPUSD', contractSize: '100000', digits: 5, maxLeverage: 500, bid: '1.26000', ask: '1.26015' },
  { symbol: 'XAUUSD', contractSize: '100', digits: 2, maxLeverage: 200, bid: '2000.00', ask: '2000.40' },
  { symbol: 'BTCUSD', contractSize: '1', digits: 2, maxLeverage: 20, bid: '60000.00', ask: '60020.00' },
];

export function toInstrument(spec: SymbolSpec): Instrument {
  return {
    symbol: spec.symbol,
    contractSize: new Decimal(spec.contractSize),
    digits: spec.digits,
    minVolume: new Decimal('0.01'),
    maxVolume: new Decimal('100.00'),
    volumeStep: new Decimal('0.01'),
    maxLeverage: spec.maxLeverage,
    startBid: spec.bid === undefined ? undefined : new Decimal(spec.bid),
    startAsk: spec.ask === undefined ? undefined : new Decimal(spec.ask),
  };
}

/** The configured instruments, in their configured order. */
export class Instruments {
  private readonly bySymbol = new Map<string, Instrument>();

  constructor(specs: SymbolSpec[] = DEFAULT_SYMBOLS) {
    for (const spec of specs) this.bySymbol.set(spec.symbol, toInstrument(spec));
  }

  get(symbol: string): Instrument | undefined {
    return this.bySymbol.get(symbol);
  }

  has(symbol: string): boolean {
    return this.bySymbol.has(symbol);
  }

  list(): Instrument[] {
    return [...this.bySymbol.values()];
  }

  symbols(): string[] {
    return [...this.bySymbol.keys()];
  }
}

export function toSymbolView(i: Instrument) {
  return {
    symbol: i.symbol,
    contractSize: i.contractSize.toFixed(),
    digits: i.digits,
    minVolume: i.minVolume.toFixed(2),
    maxVolume: i.maxVolume.toFixed(2),
    volumeStep: i.volumeStep.toFixed(2),
    maxLeverage: i.maxLeverage,
  };
}
