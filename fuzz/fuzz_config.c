/* Fuzzes the config reader (src/core/config.c, inih-based) with the whole file as input, written to
 * a scratch file on tmpfs because config_load() takes a path. A config that loads is printed as
 * `buzon check-config` prints it, and that output must load again and print the same: what the
 * server says it runs with is a config it would accept. Errors must name the file and a line. */
#include "core/config.h"
#include "fuzz_common.h"

static char *scratch;
static char *config_path;
static char *printed_path;

static void cleanup(void)
{
	fuzz_remove_tree(scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	scratch = fuzz_scratch_dir("config");
	config_path = xasprintf("%s/buzon.conf", scratch);
	printed_path = xasprintf("%s/printed.conf", scratch);
	atexit(cleanup);
	return 0;
}

static char *print_config(const struct buzon_config *config, size_t *len_r)
{
	char *text = NULL;
	FILE *out = open_memstream(&text, len_r);

	FUZZ_CHECK(out != NULL);
	config_print(config, out);
	fclose(out);
	return text;
}

static void check_location(const struct buzon_config *config)
{
	static const char *const users[] = {"alice", "bob@example.org", "a@b@c", "@"};

	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
		free(config_expand_location(config->mail_location, users[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *error = NULL;

	fuzz_write_file(config_path, data, size);
	struct buzon_config *config = config_load(config_path, &error);
	if (config == NULL) {
		FUZZ_CHECK(error != NULL && strncmp(error, config_path, strlen(config_path)) == 0);
		free(error);
		return 0;
	}
	check_location(config);
	size_t len, len_again;
	char *text = print_config(config, &len);
	fuzz_write_file(printed_path, text, len);
	struct buzon_config *again = config_load(printed_path, &error);
	if (again == NULL)
		fprintf(stderr, "printed config does not load: %s\n", error);
	FUZZ_CHECK(again != NULL);
	char *text_again = print_config(again, &len_again);
	FUZZ_CHECK(len == len_again && memcmp(text, text_again, len) == 0);
	free(text);
	free(text_again);
	config_free(&again);
	config_free(&config);
	return 0;
}
