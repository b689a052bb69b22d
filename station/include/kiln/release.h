/*
 * Recipe releases. A manufacturing engineer releases a recipe by signing its SHA-256 with a key in
 * an HSM (kiln recipe release); the statement sits next to the recipe as RECIPE.release (+ .sig).
 * A production station runs only a recipe whose release verifies with one of the keys its
 * configuration trusts (authority.release_keys), and records the release in its database.
 */
#ifndef KILN_RELEASE_H
#define KILN_RELEASE_H

struct station_config;
struct recipe;
struct db;

/* kiln recipe release RECIPE --config CFG --key URI */
int station_recipe_release(int argc, char **argv);

/*
 * Check the release of rc against cfg's trusted keys and record it in db. KILN_E_NOT_FOUND when
 * there is no release, KILN_E_MISMATCH when it does not verify or names another recipe; detail
 * says which. *ret_released is 1 when a valid release was recorded.
 */
int station_release_check(const struct station_config *cfg, const struct recipe *rc,
                          struct db *db, int *ret_released);

#endif
