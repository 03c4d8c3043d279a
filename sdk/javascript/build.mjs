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
//
// For `host dev`: `--dev-runtime --output FILE` builds the development runtime
// (`dev-runtime.js`), one component shared by every JavaScript plugin, and
// `--app app.js --dev-bundle --output FILE` only bundles the plugin for it (no componentize).

import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
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
    // Build the development runtime instead of a plugin.
    "dev-runtime": { type: "boolean" },
    // Bundle the plugin for the development runtime, without componentizing it.
    "dev-bundle": { type: "boolean" },
  },
});
const runtime = values["dev-runtime"];
const wellFormed = values["toolchain-only"] ||
  (values.output && (runtime ? !values.app && !values["dev-bundle"] : values.app));
if (!wellFormed) {
  console.error(
    "usage: build.mjs --app ENTRY.js [--dev-bundle] --output FILE | --dev-runtime --output COMPONENT.wasm | --toolchain-only",
  );
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

const output = resolve(values.output);
mkdirSync(dirname(output), { recursive: true });
const esbuild = await import("esbuild");
// Its own staging files: two hosts may build the shared development runtime at once.
const staging = `${output}.${process.pid}.partial`;

if (values["dev-bundle"]) {
  // The plugin's modules and what they import, as one CommonJS script the development runtime
  // evaluates; this SDK and the contract's interfaces are the runtime's, required by name.
  await esbuild.build({
    entryPoints: [resolve(values.app)],
    bundle: true,
    format: "cjs",
    platform: "neutral",
    outfile: staging,
    external: ["handler-host", "handler-host:*"],
    logLevel: "warning",
  });
  renameSync(staging, output);
  console.log(`bundled ${output}`);
  process.exit(0);
}

// One ES module: the entry, what it imports by relative path, and this SDK (imported as
// "handler-host"); the contract's own imports (and the runtime's WASI ones) stay imports of
// the component.
// A plugin's is kept beside its component: stack traces name lines of it.
const bundle = runtime ? `${output}.${process.pid}.bundle.js` : `${output}.bundle.js`;
await esbuild.build({
  entryPoints: [runtime ? join(sdk, "dev-runtime.js") : resolve(values.app)],
  bundle: true,
  format: "esm",
  platform: "neutral",
  outfile: bundle,
  alias: { "handler-host": join(sdk, "handler-host.js") },
  external: ["handler-host:*", "wasi:*"],
  logLevel: "warning",
});

// The runtime's world is the contract plus the WASI interfaces it reads the bundle with: this
// SDK's `wit/` with the contract added to its packages.
let witPath = wit;
let worldName = "plugin";
if (runtime) {
  witPath = mkdtempSync(join(tmpdir(), "handler-host-dev-runtime-wit-"));
  cpSync(join(sdk, "wit"), witPath, { recursive: true });
  copyFileSync(join(wit, "plugin.wit"), join(witPath, "deps", "plugin.wit"));
  worldName = "dev-runtime";
}

// While it is initialised, the component sees its source folder as its file system.
process.chdir(dirname(bundle));
const { componentize } = await import("@bytecodealliance/componentize-js");
let component;
try {
  ({ component } = await componentize({
    sourcePath: bundle,
    witPath,
    worldName,
    // No HTTP: the host grants none. Clocks and randomness are what the host provides.
    disableFeatures: ["http", "fetch-event"],
  }));
} finally {
  if (runtime) {
    rmSync(bundle, { force: true });
    rmSync(witPath, { recursive: true, force: true });
  }
}
// Renamed into place whole, so a watching host never loads half a component.
writeFileSync(staging, component);
renameSync(staging, output);
console.log(`built ${output}`);
