#!/usr/bin/env node
// Builds a JavaScript plugin into a WebAssembly component.
//
// Run from the plugin's folder (its `plugin.toml` does):
//   node ../../sdk/javascript/build.mjs --app app.js --output ../../target/plugins/js/notifier.wasm
//
// Installs the pinned toolchain (package-lock.json: componentize-js) into this SDK's
// node_modules the first time, then componentizes the entry module against the repository's
// WIT contract. The entry module imports this SDK as "handler-host" and may import its own
// modules by relative path: they are bundled into one module first (esbuild).

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const sdk = dirname(fileURLToPath(import.meta.url));
const wit = resolve(sdk, "../../wit");
const { values } = parseArgs({
  options: {
    app: { type: "string" },
    output: { type: "string" },
    // Install the pinned toolchain and build nothing.
    "toolchain-only": { type: "boolean" },
  },
});
if (!values["toolchain-only"] && (!values.app || !values.output)) {
  console.error("usage: build.mjs --app ENTRY.js --output COMPONENT.wasm | --toolchain-only");
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

if (values["toolchain-only"]) process.exit(0);

const app = resolve(values.app);
const output = resolve(values.output);
mkdirSync(dirname(output), { recursive: true });

// One ES module: the entry, what it imports by relative path, and this SDK (imported as
// "handler-host"); the contract's own imports stay imports of the component.
const bundle = `${output}.bundle.js`;
const esbuild = await import("esbuild");
await esbuild.build({
  entryPoints: [app],
  bundle: true,
  format: "esm",
  platform: "neutral",
  outfile: bundle,
  alias: { "handler-host": join(sdk, "handler-host.js") },
  external: ["handler-host:*"],
  logLevel: "warning",
});

// While it is initialised, the component sees its source folder as its file system.
process.chdir(dirname(bundle));
const { componentize } = await import("@bytecodealliance/componentize-js");
const { component } = await componentize({
  sourcePath: bundle,
  witPath: wit,
  worldName: "plugin",
  // No HTTP: the host grants none. Clocks and randomness are what the host provides.
  disableFeatures: ["http", "fetch-event"],
});
// Renamed into place whole, so a watching host never loads half a component.
writeFileSync(`${output}.partial`, component);
renameSync(`${output}.partial`, output);
console.log(`built ${output}`);

