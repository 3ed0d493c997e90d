/** TypeBox schemas of the trading routes (also the OpenAPI source). */
import { Type } from '@sinclair/typebox';
import { DecimalInput, IdString, IntegerInput, MoneyString, PageQuery, Timestamp, WalletTypeSchema } from '../../platform/http/schemas.js';

/** Prices are checked against the symbol's digits by the service; 10 is the most any symbol has. */
export const PriceInput = (description: string) => DecimalInput(10, `${description} At most the symbol's digits decimals.`, '1.07500');
const PriceString = Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?$', examples: ['1.08010'] });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

export const SideSchema = Type.Union([Type.Literal('buy'), Type.Literal('sell')]);

export const SymbolSchema = Type.Object({
  symbol: Type.String(),
  contractSize: Type.String(),
  digits: Type.Integer(),
  minVolume: Type.String(),
  maxVolume: Type.String(),
  volumeStep: Type.String(),
  maxLeverage: Type.Integer(),
}, { title: 'Symbol' });

export const QuoteSchema = Type.Object({ symbol: Type.String(), bid: PriceString, ask: PriceString, time: Timestamp }, { title: 'Quote' });

export const OrderSchema = Type.Object({
  id: IdString,
  symbol: Type.String(),
  side: SideSchema,
  volume: Type.String({ examples: ['1.00'] }),
  leverage: Type.Integer(),
  walletType: WalletTypeSchema,
  openPrice: PriceString,
  margin: MoneyString,
  stopLoss: Nullable(PriceString),
  takeProfit: Nullable(PriceString),
  status: Type.Union([Type.Literal('open'), Type.Literal('closed')]),
  closePrice: Nullable(PriceString),
  profit: Nullable(MoneyString),
  closeReason: Type.Union([Type.Literal('user'), Type.Literal('stop_loss'), Type.Literal('take_profit'), Type.Literal('stop_out'), Type.Null()]),
  openedAt: Timestamp,
  closedAt: Type.Union([Timestamp, Type.Null()]),
}, { title: 'Order' });

export const PlaceOrderBody = Type.Object({
  symbol: Type.String({ minLength: 1, maxLength: 32, description: 'A symbol of GET /api/v1/symbols (unknown: 422 UNKNOWN_SYMBOL)' }),
  side: SideSchema,
  volume: DecimalInput(2, "Lots: a multiple of the symbol's volumeStep within minVolume..maxVolume.", '1.00'),
  walletType: WalletTypeSchema,
  leverage: Type.Optional(IntegerInput({ min: 1, max: 1_000_000 }, "Integer ≥ 1, at most the symbol's maxLeverage; default the smaller of 100 and that maximum.")),
  stopLoss: Type.Optional(Type.Union([PriceInput('Stop-loss, on the losing side of the open price.'), Type.Null()])),
  takeProfit: Type.Optional(Type.Union([PriceInput('Take-profit, on the winning side of the open price.'), Type.Null()])),
}, { additionalProperties: false });

export const ModifyOrderBody = Type.Object({
  stopLoss: Type.Optional(Type.Union([PriceInput('New stop-loss; null removes it; omitted keeps it.'), Type.Null()])),
  takeProfit: Type.Optional(Type.Union([PriceInput('New take-profit; null removes it; omitted keeps it.'), Type.Null()])),
}, { additionalProperties: false });

export const OrderListQuery = Type.Object({
  ...PageQuery,
  status: Type.Optional(Type.Union([Type.Literal('open'), Type.Literal('closed')])),
  walletType: Type.Optional(WalletTypeSchema),
});

export const AdminQuoteBody = Type.Object({
  symbol: Type.String({ minLength: 1, maxLength: 32 }),
  bid: PriceInput('Bid, > 0 and ≤ ask.'),
  ask: PriceInput('Ask, ≥ bid.'),
}, { additionalProperties: false });

export const OrderIdParams = Type.Object({ id: Type.String() });
