import { defineConfig } from 'vitest/config';

// One vitest project per package and service (each folder's package.json names it), plus test/.
export default defineConfig({
  test: {
    projects: ['packages/*', 'services/*', 'test'],
  },
});
