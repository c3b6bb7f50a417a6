"""Tools `serve` never uses: benchmarks and reference builders."""
