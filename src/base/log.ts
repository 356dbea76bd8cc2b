// Structured, rate-limited logging: one JSON object per line on stderr. Each event name
// may log at most `perSecond` lines a second; the rest are counted and reported once the
// second is over, so a packet flood never becomes a log flood.

export type Level = 'info' | 'warn' | 'error';

export interface Logger {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

export class JsonLogger implements Logger {
  private readonly windows = new Map<string, { second: number; count: number; suppressed: number }>();

  constructor(
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
    private readonly now: () => number = Date.now,
    private readonly perSecond = 20,
    private readonly context: Record<string, unknown> = {},
  ) {}

  info(event: string, fields?: Record<string, unknown>): void {
    this.log('info', event, fields);
  }

  warn(event: string, fields?: Record<string, unknown>): void {
    this.log('warn', event, fields);
  }

  error(event: string, fields?: Record<string, unknown>): void {
    this.log('error', event, fields);
  }

  private log(level: Level, event: string, fields?: Record<string, unknown>): void {
    const now = this.now();
    const second = Math.floor(now / 1000);
    let w = this.windows.get(event);
    if (!w) {
      w = { second, count: 0, suppressed: 0 };
      this.windows.set(event, w);
    }
    if (w.second !== second) {
      if (w.suppressed > 0) this.emit(now, 'warn', 'log-suppressed', { event, lines: w.suppressed });
      w.second = second;
      w.count = 0;
      w.suppressed = 0;
    }
    if (w.count >= this.perSecond) {
      w.suppressed++;
      return;
    }
    w.count++;
    this.emit(now, level, event, fields);
  }

  private emit(now: number, level: Level, event: string, fields?: Record<string, unknown>): void {
    this.write(`${JSON.stringify({ time: new Date(now).toISOString(), level, event, ...this.context, ...fields })}\n`);
  }
}

/** A logger that keeps lines in memory (tests, replay). */
export class MemoryLogger implements Logger {
  readonly lines: { level: Level; event: string; fields?: Record<string, unknown> }[] = [];
  info(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'info', event, fields });
  }
  warn(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'warn', event, fields });
  }
  error(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'error', event, fields });
  }
}
