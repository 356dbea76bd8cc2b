#!/usr/bin/env node
// Entry point of the nvi-switch binary; the code lives in dist/ (npm run build).
import { setFlagsFromString } from 'node:v8';

// V8 hands a function to its optimizing compiler once the function has run through its
// "interrupt budget" (66 KB of bytecode by default) a few times. A switch that carries a
// packet now and then runs each stage for a batch of one: at the default its stages stayed in
// baseline code for thousands of packets, compiled only later, in the middle of quiet traffic.
// With a budget of 16 KB a fresh lab's lone pings took 0.42-0.46 ms against 0.73-0.82 (p99
// 0.6-1.1 against 4.5-6.3 ms), the compiling done during the first busy second instead
// (bench/latency.ts, notes of issue 13). Set before any of our code loads.
setFlagsFromString('--interrupt-budget=16384');
const { main } = await import('../dist/src/cli/main.js');

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 1; },
);
