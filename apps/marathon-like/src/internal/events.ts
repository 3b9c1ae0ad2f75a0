// The event bus behind /v2/events. Unlike Marathon, events carry increasing ids and keep their
// order: a client that reconnects with Last-Event-ID gets what it missed from a bounded buffer.

export interface BusEvent {
  readonly id: number
  readonly eventType: string
  readonly data: Record<string, unknown>
}

export type Listener = (event: BusEvent) => void

export class EventBus {
  private readonly buffer: Array<BusEvent> = []
  private readonly listeners = new Set<Listener>()
  private next = 1

  private readonly capacity: number
  private readonly now: () => number
  /** `now`: the time in ms (the server passes the Effect Clock's). */
  constructor(capacity: number, now: () => number) {
    this.capacity = capacity
    this.now = now
  }

  /** Publishes an event (`timestamp` and `eventType` are added to its payload, as Marathon does). */
  publish(eventType: string, payload: Record<string, unknown>): BusEvent {
    const event: BusEvent = { id: this.next++, eventType, data: { ...payload, eventType, timestamp: new Date(this.now()).toISOString() } }
    this.buffer.push(event)
    // Trimmed in chunks (a tenth of the capacity at a time), not one shift per event: a burst of
    // status updates would otherwise move the whole buffer once per event.
    if (this.buffer.length > this.capacity + Math.max(1, Math.floor(this.capacity / 10))) this.buffer.splice(0, this.buffer.length - this.capacity)
    for (const l of this.listeners) l(event)
    return event
  }

  /** The buffered events after `lastId`, in order (the last `capacity` ones when `lastId` is older than that). */
  since(lastId: number): ReadonlyArray<BusEvent> {
    const start = Math.max(0, this.buffer.length - this.capacity)
    const first = this.buffer[start]
    if (first === undefined || lastId < first.id) return this.buffer.slice(start)
    return this.buffer.slice(start + lastId - first.id + 1)
  }

  get lastId(): number {
    return this.next - 1
  }

  /** Starts ids after `id` (a new leader continues the numbering it read from the store). */
  startAfter(id: number): void {
    if (id >= this.next) this.next = id + 1
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  get subscribers(): number {
    return this.listeners.size
  }
}

const frames = new WeakMap<BusEvent, string>()

/**
 * The event as one server-sent-events frame, serialised once however many streams carry it
 * (event fan-out to N subscribers costs one JSON.stringify, not N).
 */
export const frameOf = (event: BusEvent): string => {
  let text = frames.get(event)
  if (text === undefined) frames.set(event, (text = `id: ${event.id}\nevent: ${event.eventType}\ndata: ${JSON.stringify(event.data)}\n\n`))
  return text
}
