// Checks at build time that every dependency in package.json is among the
// Node packages this image ships (no package registry is reachable), and
// that its major version matches what is asked for.
'use strict';

const fs = require('fs');
const path = require('path');

const file = process.argv[2];
const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
const wanted = Object.assign({}, manifest.dependencies || {});
const roots = (process.env.NODE_PATH || '/usr/share/nodejs').split(':').filter(Boolean);

function installedVersion(name) {
  for (const root of roots) {
    const manifestPath = path.join(root, name, 'package.json');
    if (fs.existsSync(manifestPath)) return JSON.parse(fs.readFileSync(manifestPath, 'utf8')).version;
  }
  return null;
}

// The major version a range asks for, or null when any will do.
function wantedMajor(range) {
  const match = /^\s*[\^~=v]?\s*(\d+)(\.|\s*$|\.x)/.exec(range);
  return match ? Number(match[1]) : null;
}

const problems = [];
for (const [name, range] of Object.entries(wanted)) {
  const version = installedVersion(name);
  if (version === null) {
    problems.push(`dependency "${name}@${range}" is not available: no package registry is reachable, and this image does not ship it`);
    continue;
  }
  const major = wantedMajor(String(range));
  if (major !== null && Number(version.split('.')[0]) !== major) {
    problems.push(`dependency "${name}@${range}" is wanted, but version ${version} is the one available`);
    continue;
  }
  console.log(`berth: ${name}@${range} → ${version}`);
}
if (problems.length > 0) {
  for (const problem of problems) console.error(`berth: ${problem}`);
  process.exit(1);
}
