import { execFileSync } from 'node:child_process';

/** The command-line tools of `tools` that are not installed (tests that need them skip, saying which). */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((tool) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}
