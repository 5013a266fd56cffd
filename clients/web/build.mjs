// Builds the page into server/candlewire/gateway/static/ (committed, so the
// Python package serves it without Node) and the grpc-web test page into
// tests/web/static/.
//
//   node build.mjs           write the assets
//   node build.mjs --check   rebuild in memory (and regenerate src/gen with
//                            buf into a temporary directory) and fail if
//                            anything differs from the committed files
//
// The output is deterministic: same sources, same lockfile, same bytes.

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const pageDir = join(repo, "server/candlewire/gateway/static");
const testDir = join(repo, "tests/web/static");

const common = {
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome111", "firefox111", "safari16"],
  charset: "utf8",
  legalComments: "eof",
  sourcemap: false,
  write: false,
  logLevel: "warning",
  absWorkingDir: here,
};

async function bundle(entry, outfile) {
  const result = await esbuild.build({ ...common, entryPoints: [entry], outfile });
  return result.outputFiles.map((file) => [file.path, file.contents]);
}

async function copy(source, target) {
  return [[target, new Uint8Array(await readFile(join(here, source)))]];
}

/** Every output file: absolute path -> bytes. */
async function outputs() {
  const parts = await Promise.all([
    bundle("src/main.ts", join(pageDir, "app.js")),
    bundle("src/style.css", join(pageDir, "style.css")),
    copy("src/index.html", join(pageDir, "index.html")),
    copy("src/favicon.svg", join(pageDir, "favicon.svg")),
    bundle("test/grpcweb.ts", join(testDir, "grpcweb.js")),
    copy("test/grpcweb.html", join(testDir, "grpcweb.html")),
  ]);
  return new Map(parts.flat());
}

async function listFiles(dir) {
  const found = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) found.push(join(entry.parentPath ?? entry.path, entry.name));
  }
  return found;
}

async function readOrNull(path) {
  try {
    return new Uint8Array(await readFile(path));
  } catch {
    return null;
  }
}

function same(a, b) {
  return a !== null && b !== null && Buffer.from(a).equals(Buffer.from(b));
}

async function compareTrees(expectedDir, actualDir, label) {
  const problems = [];
  const expected = await listFiles(expectedDir).catch(() => []);
  const actual = await listFiles(actualDir).catch(() => []);
  const names = new Set([
    ...expected.map((f) => relative(expectedDir, f)),
    ...actual.map((f) => relative(actualDir, f)),
  ]);
  for (const name of [...names].sort()) {
    const a = await readOrNull(join(expectedDir, name));
    const b = await readOrNull(join(actualDir, name));
    if (!same(a, b)) problems.push(`${label}/${name}`);
  }
  return problems;
}

async function checkGenerated() {
  const scratch = mkdtempSync(join(tmpdir(), "candlewire-gen-"));
  try {
    const buf = process.env.BUF ?? "buf";
    const run = spawnSync(buf, ["generate", "--output", scratch], { cwd: here, stdio: "inherit" });
    if (run.error || run.status !== 0) {
      throw new Error(`${buf} generate failed (is the buf CLI on PATH? pip install buf-bin)`);
    }
    return await compareTrees(join(scratch, "src/gen"), join(here, "src/gen"), "clients/web/src/gen");
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function check() {
  const built = await outputs();
  const problems = await checkGenerated();
  for (const [path, contents] of built) {
    if (!same(contents, await readOrNull(path))) problems.push(relative(repo, path));
  }
  for (const dir of [pageDir, testDir]) {
    for (const path of await listFiles(dir).catch(() => [])) {
      if (!built.has(path)) problems.push(`${relative(repo, path)} (not produced by the build)`);
    }
  }
  if (problems.length) {
    console.error("Built assets are out of date; run `npm run generate && npm run build` in clients/web:");
    for (const problem of problems) console.error(`  ${problem}`);
    process.exit(1);
  }
  console.log(`web assets are current (${built.size} files)`);
}

async function build() {
  const built = await outputs();
  for (const [path, contents] of built) {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, contents);
  }
  for (const dir of [pageDir, testDir]) {
    for (const path of await listFiles(dir)) {
      if (!built.has(path)) rmSync(path);
    }
  }
  for (const path of built.keys()) {
    console.log(`${relative(repo, path)}  ${(built.get(path).length / 1024).toFixed(1)} KiB`);
  }
}

if (process.argv.includes("--check")) {
  await check();
} else {
  await build();
}
