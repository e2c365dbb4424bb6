// The bundle's upscaler on a desktop, against ncnn built from source: the same srdeploy_sr.cpp the Android app
// runs. Reads and writes binary PPM (P6), so it needs nothing beyond ncnn:
//   srdeploy_upscale MODEL_DIR IN.ppm OUT.ppm [TILE] [RAW.f32]
// RAW.f32: the network's output, float32 C×H×W, for comparing with srdeploy's Python session.
// With SRDEPLOY_GRAPH_RUNNER=flat every graph runs through a GraphRunner on flat floats, the path the app's ExecuTorch
// CPU path takes, here backed by ncnn's own nets (a check of that path's shapes and copies).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "srdeploy_sr.h"

static bool read_ppm(const char* path, std::vector<unsigned char>* rgb, int* w, int* h) {
    std::ifstream file(path, std::ios::binary);
    std::string magic;
    int max = 0;
    if (!(file >> magic >> *w >> *h >> max) || magic != "P6" || max != 255) return false;
    file.get();  // the one whitespace byte before the pixels
    rgb->resize(static_cast<size_t>(*w) * *h * 3);
    return static_cast<bool>(file.read(reinterpret_cast<char*>(rgb->data()), static_cast<std::streamsize>(rgb->size())));
}

static bool write_ppm(const char* path, const std::vector<unsigned char>& rgb, int w, int h) {
    std::ofstream file(path, std::ios::binary);
    file << "P6\n" << w << " " << h << "\n255\n";
    file.write(reinterpret_cast<const char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
    return static_cast<bool>(file);
}

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s MODEL_DIR IN.ppm OUT.ppm [TILE] [RAW.f32]\n", argv[0]);
        return 2;
    }
    srdeploy::FolderFiles files(argv[1]);
    srdeploy::Upscaler upscaler, nets;
    std::string error;
    const char* runner = std::getenv("SRDEPLOY_GRAPH_RUNNER");
    const bool flat = runner && std::string(runner) == "flat";
    const bool loaded = flat ? nets.load(files, false, 0, &error) && upscaler.load(files,
                                   [&nets](const std::string& graph, const std::vector<float>& input, int c, int h, int w) {
                                       return nets.run_flat(graph, input, c, h, w);
                                   }, &error)
                             : upscaler.load(files, true, 0, &error);
    if (!loaded) {
        std::fprintf(stderr, "error: %s\n", error.c_str());
        return 2;
    }
    std::vector<unsigned char> rgb;
    int w = 0, h = 0;
    if (!read_ppm(argv[2], &rgb, &w, &h)) {
        std::fprintf(stderr, "error: %s is not a binary PPM (P6, 8 bits)\n", argv[2]);
        return 2;
    }
    const int tile = argc > 4 ? std::stoi(argv[4]) : 256;
    std::vector<float> raw;
    const std::vector<unsigned char> out = upscaler.upscale(rgb.data(), w, h, tile, argc > 5 ? &raw : nullptr);
    const int s = upscaler.facts().scale;
    if (!write_ppm(argv[3], out, w * s, h * s)) return 1;
    if (argc > 5) {
        std::ofstream file(argv[5], std::ios::binary);
        file.write(reinterpret_cast<const char*>(raw.data()), static_cast<std::streamsize>(raw.size() * sizeof(float)));
    }
    std::printf("%s %dx%d -> %dx%d (%s, tile %d)\n", argv[3], w, h, w * s, h * s,
                flat ? "graph runner" : upscaler.on_vulkan() ? "Vulkan" : "CPU", tile);
    return 0;
}
