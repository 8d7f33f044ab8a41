#!/usr/bin/env node
// plugctl (also installed as the kubectl plugin `kubectl-plugline`). Runs the TypeScript sources
// through tsx's loader, so it works from a fresh clone without a build step.
import { register } from 'tsx/esm/api';

register();
await import(new URL('../src/main.ts', import.meta.url).href);
