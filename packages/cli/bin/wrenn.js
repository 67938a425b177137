#!/usr/bin/env node
// Launcher of the `wrenn` command, kept outside dist/ so that it stays
// executable after a clean build (tsc does not set the executable bit).
import '../dist/src/main.js';
