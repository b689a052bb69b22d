/*
 * Corpus replay driver for builds without libFuzzer: runs LLVMFuzzerTestOneInput on every file of
 * the directories (or files) named on the command line, so ctest replays each fuzz corpus in gcc
 * builds too. Fails when a corpus directory is missing or empty: a replay that checks nothing must
 * not pass.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        long n;
        int ok = 0;

        if (f == NULL) {
                fprintf(stderr, "replay: cannot open %s\n", path);
                return 0;
        }
        if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
                buf = malloc((size_t)n + 1);
                if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                        /* an exact-size copy so ASan sees reads past the end */
                        uint8_t *exact = malloc((size_t)n ? (size_t)n : 1);
                        if (exact != NULL) {
                                memcpy(exact, buf, (size_t)n);
                                LLVMFuzzerTestOneInput(exact, (size_t)n);
                                free(exact);
                                ok = 1;
                        }
                }
        }
        free(buf);
        fclose(f);
        return ok;
}

int main(int argc, char **argv)
{
        unsigned files = 0;

        if (LLVMFuzzerInitialize != NULL)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                struct stat st;
                DIR *d;
                struct dirent *e;

                if (stat(argv[i], &st) != 0) {
                        fprintf(stderr, "replay: %s: missing\n", argv[i]);
                        return 1;
                }
                if (!S_ISDIR(st.st_mode)) {
                        files += (unsigned)run_file(argv[i]);
                        continue;
                }
                d = opendir(argv[i]);
                if (d == NULL)
                        return 1;
                while ((e = readdir(d)) != NULL) {
                        char path[4096];

                        if (e->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
                        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
                                files += (unsigned)run_file(path);
                }
                closedir(d);
        }
        printf("replayed %u inputs\n", files);
        return files > 0 ? 0 : 1;
}
