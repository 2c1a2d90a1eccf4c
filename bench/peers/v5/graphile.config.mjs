// PostGraphile v5 as a peer of bench/api.py: the amber preset, with every column orderable and every
// relation exposed whether or not an index backs it (v4's default, ignoreIndexes). Without this, v5 hides
// the interactions of a customer and ordering by placed_at: their indexes are partial (migration 0006).
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

export default {
  extends: [PostGraphileAmberPreset],
  disablePlugins: ["PgIndexBehaviorsPlugin"],
  grafserv: { watch: false },
};
