#!/usr/bin/env node
// Builds a JavaScript plugin into a WebAssembly component.
//
// Run from the plugin's folder (its `plugin.toml` does):
//   node ../../sdk/javascript/build.mjs --app app.js --output ../../target/plugins/js/notifier.wasm
//
// Installs the pinned toolchain (package-lock.json: componentize-js) into this SDK's
// node_modules the first time, then componentizes the entry module against the repository's
// WIT contract. The entry module may import other modules (this SDK too) by relative path.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const sdk = dirname(fileURLToPath(import.meta.url));
const root = resolve(sdk, "../..");
const wit = join(root, "wit");
const { values } = parseArgs({
  options: { app: { type: "string" }, output: { type: "string" } },
});
if (!values.app || !values.output) {
  console.error("usage: build.mjs --app ENTRY.js --output COMPONENT.wasm");
  process.exit(2);
}

// The toolchain, installed again when the lock file changed since the last install.
const lock = join(sdk, "package-lock.json");
const stamp = join(sdk, "node_modules", ".installed-lock");
if (!existsSync(stamp) || readFileSync(stamp, "utf8") !== readFileSync(lock, "utf8")) {
  console.log(`installing the JavaScript plugin toolchain into ${join(sdk, "node_modules")}`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  execFileSync(npm, ["ci", "--no-audit", "--no-fund"], { cwd: sdk, stdio: "inherit" });
  writeFileSync(stamp, readFileSync(lock, "utf8"));
}

const app = resolve(values.app);
const output = resolve(values.output);
// The component sees the working directory as its file system while it is initialised: from
// the repository root, the entry module can import this SDK by relative path.
process.chdir(root);
const { componentize } = await import("@bytecodealliance/componentize-js");
const { component } = await componentize({
  sourcePath: app,
  witPath: relative(root, wit),
  worldName: "plugin",
  // No HTTP: the host grants none. Clocks and randomness are what the host provides.
  disableFeatures: ["http", "fetch-event"],
});
mkdirSync(dirname(output), { recursive: true });
// Renamed into place whole, so a watching host never loads half a component.
writeFileSync(`${output}.partial`, component);
renameSync(`${output}.partial`, output);
console.log(`built ${output}`);
