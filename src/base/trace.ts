// A recorder attached to the real upcall, verification and policy code by `explain`.
// Code calls `trace?.step(...)`: with no recorder attached the call, and the building of
// its arguments, is skipped, so tracing costs nothing when it is off.

export type StepResult = 'ok' | 'fail' | 'info';

export interface TraceStep {
  readonly stage: string;
  readonly text: string;
  readonly result: StepResult;
}

export class Trace {
  readonly steps: TraceStep[] = [];

  step(stage: string, text: string, result: StepResult = 'info'): void {
    this.steps.push({ stage, text, result });
  }

  /** One line per step: "  3. verify      ok    certificate chains to CN=nvi lab CA". */
  format(): string {
    const w = Math.max(...this.steps.map((s) => s.stage.length), 5);
    return this.steps
      .map((s, k) => `${String(k + 1).padStart(3)}. ${s.stage.padEnd(w)}  ${s.result.padEnd(4)}  ${s.text}`)
      .join('\n');
  }
}
