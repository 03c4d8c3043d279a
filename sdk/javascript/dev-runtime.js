/**
 * The JavaScript development runtime: one component that runs any JavaScript plugin from its
 * bundle.
 *
 * `host dev` runs a plugin whose `plugin.toml` has a `[dev]` table on this component instead of
 * componentizing the plugin: on each save the host runs the plugin's `[dev.build]` (`build.mjs
 * --dev-bundle`: esbuild, a fraction of a second), grants the bundle read-only at `/plugin` and
 * names it in `HANDLER_HOST_ENTRY`, and each instance evaluates it on its first call. `host run`
 * never uses it: production loads the plugin's own built component.
 *
 * The bundle is CommonJS: the plugin's modules and the npm packages it imports, with
 * "handler-host" (this SDK, carried here) and the contract's interfaces left as `require`s that
 * this runtime answers.
 */

import { getEnvironment } from "wasi:cli/environment@0.2.12";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import * as sdk from "handler-host";
import * as unitOfWork from "handler-host:plugin/unit-of-work@0.2.0";
import * as log from "handler-host:plugin/log@0.2.0";

const SOURCE_MOUNT = "/plugin";
const ENTRY_VAR = "HANDLER_HOST_ENTRY";
const CHUNK = 1n << 20n;

/** What a bundle may `require`: everything else is bundled into it. */
const provided = {
  "handler-host": sdk,
  "handler-host:plugin/unit-of-work@0.2.0": unitOfWork,
  "handler-host:plugin/log@0.2.0": log,
};

/** An error that explains why the plugin cannot run here, in the one line the host keeps. */
function refuse(message) {
  console.error(`panicked: ${message}`);
  return new Error(message);
}

/** The granted folder's `name`, as text. */
function readSource(name) {
  const mount = getDirectories().find(([, path]) => path === SOURCE_MOUNT);
  if (!mount) {
    throw refuse("the JavaScript development runtime runs only under `host dev` (nothing is granted at /plugin)");
  }
  let file;
  try {
    file = mount[0].openAt({}, name, {}, { read: true });
  } catch (error) {
    throw refuse(`the development runtime cannot open \`${name}\` in the plugin's bundle folder: ${error?.payload ?? error}`);
  }
  const parts = [];
  let offset = 0n;
  for (;;) {
    const [bytes, end] = file.read(CHUNK, offset);
    parts.push(bytes);
    offset += BigInt(bytes.length);
    if (end || bytes.length === 0) break;
  }
  const whole = new Uint8Array(Number(offset));
  let at = 0;
  for (const part of parts) {
    whole.set(part, at);
    at += part.length;
  }
  return new TextDecoder().decode(whole);
}

let plugin = null;

/** The plugin's exports, from its bundle evaluated on the instance's first call. */
function loaded() {
  if (plugin !== null) return plugin;
  const entry = getEnvironment().find(([name]) => name === ENTRY_VAR)?.[1];
  if (!entry) {
    throw refuse(`the JavaScript development runtime runs only under \`host dev\` (${ENTRY_VAR} is not set)`);
  }
  const source = readSource(entry);
  const module = { exports: {} };
  const require = (name) => {
    if (Object.hasOwn(provided, name)) return provided[name];
    throw new Error(
      `\`${name}\` cannot be loaded at run time: the bundle must carry it (a relative module or an ` +
        "installed npm package is bundled), or run `host dev --no-dev-runtime` to build the plugin " +
        "on every save instead",
    );
  };
  try {
    new Function("module", "exports", "require", `${source}\n//# sourceURL=${entry}`)(
      module,
      module.exports,
      require,
    );
  } catch (error) {
    // An exception while evaluating: the plugin's own bug, named where it was thrown.
    sdk.reportCrash(error);
    throw error;
  }
  const exports = module.exports;
  for (const name of ["describe", "handleCommand", "handleEvent", "handleQuery"]) {
    if (typeof exports[name] !== "function") {
      throw refuse(
        `the plugin exports no function \`${name}\` (export what \`exportPlugin\` returns: ` +
          "`export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({...})`)",
      );
    }
  }
  plugin = exports;
  return plugin;
}

export const describe = () => loaded().describe();
export const handleCommand = (command) => loaded().handleCommand(command);
export const handleEvent = (event) => loaded().handleEvent(event);
export const handleQuery = (query) => loaded().handleQuery(query);
