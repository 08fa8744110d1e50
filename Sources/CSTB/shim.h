// Debian's stb (libstb-dev): stb_image decodes PNG and JPEG, reporting errors by return value;
// stb_image_write encodes (the tests use it to make JPEG fixtures).
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
