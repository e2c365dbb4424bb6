// The Android side of the bundle's upscaler: the model from the APK's assets (assets/model/), Bitmaps in and out
// (ARGB_8888), Vulkan when the phone has it, ncnn's CPU path otherwise; or the bundle's ExecuTorch program
// (assets/executorch/) on the CPU, each graph run by the app's ExecuTorchRunner (Kotlin, ExecuTorch's AAR). The
// upscaling itself is cpp/srdeploy_sr.cpp, the file the desktop check builds and compares with srdeploy's Python
// session.
#include <android/asset_manager_jni.h>
#include <android/bitmap.h>
#include <jni.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "srdeploy_sr.h"

namespace {

struct AssetFiles : srdeploy::Files {
    AAssetManager* manager = nullptr;
    std::string folder = "model";

    bool text(const std::string& name, std::string* out) const override {
        AAsset* asset = AAssetManager_open(manager, (folder + "/" + name).c_str(), AASSET_MODE_BUFFER);
        if (!asset) return false;
        out->assign(static_cast<const char*>(AAsset_getBuffer(asset)), static_cast<size_t>(AAsset_getLength(asset)));
        AAsset_close(asset);
        return true;
    }

    bool load(ncnn::Net& net, const std::string& graph) const override {
        return net.load_param(manager, (folder + "/" + graph + ".param").c_str()) == 0
               && net.load_model(manager, (folder + "/" + graph + ".bin").c_str()) == 0;
    }
};

std::unique_ptr<srdeploy::Upscaler> upscaler;
JavaVM* vm = nullptr;
jobject runner = nullptr;  // the app's ExecuTorchRunner (a global reference) while it runs the graphs

// One graph through ExecuTorchRunner.run, on the thread that called upscale; a Kotlin exception stays pending (it is
// what the app sees) and ends the upscale here.
std::vector<float> run_in_executorch(const std::string& graph, const std::vector<float>& input, int c, int h, int w) {
    JNIEnv* env = nullptr;
    if (vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) != JNI_OK) throw std::runtime_error("no JNIEnv");
    jclass type = env->GetObjectClass(runner);
    jmethodID run = env->GetMethodID(type, "run", "(Ljava/lang/String;[FIII)[F");
    jstring name = env->NewStringUTF(graph.c_str());
    jfloatArray values = env->NewFloatArray(static_cast<jsize>(input.size()));
    env->SetFloatArrayRegion(values, 0, static_cast<jsize>(input.size()), input.data());
    auto out = static_cast<jfloatArray>(env->CallObjectMethod(runner, run, name, values, c, h, w));
    env->DeleteLocalRef(values);
    env->DeleteLocalRef(name);
    env->DeleteLocalRef(type);
    if (env->ExceptionCheck() || out == nullptr) throw std::runtime_error("ExecuTorchRunner.run failed");
    std::vector<float> result(static_cast<size_t>(env->GetArrayLength(out)));
    env->GetFloatArrayRegion(out, 0, static_cast<jsize>(result.size()), result.data());
    env->DeleteLocalRef(out);
    return result;
}

}  // namespace

extern "C" JNIEXPORT jstring JNICALL Java_com_srdeploy_sample_Upscaler_load(JNIEnv* env, jobject, jobject assets,
                                                                           jboolean vulkan) {
    AssetFiles files;
    files.manager = AAssetManager_fromJava(env, assets);
    auto loaded = std::make_unique<srdeploy::Upscaler>();
    std::string error;
    if (!loaded->load(files, vulkan, 0, &error)) return env->NewStringUTF(error.c_str());
    upscaler = std::move(loaded);
    return nullptr;
}

// The facts from assets/executorch/srdeploy.txt; every graph through ``executorch`` (an ExecuTorchRunner).
extern "C" JNIEXPORT jstring JNICALL Java_com_srdeploy_sample_Upscaler_loadExecuTorch(JNIEnv* env, jobject, jobject assets,
                                                                                    jobject executorch) {
    AssetFiles files;
    files.manager = AAssetManager_fromJava(env, assets);
    files.folder = "executorch";
    env->GetJavaVM(&vm);
    if (runner) env->DeleteGlobalRef(runner);
    runner = env->NewGlobalRef(executorch);
    auto loaded = std::make_unique<srdeploy::Upscaler>();
    std::string error;
    if (!loaded->load(files, run_in_executorch, &error)) return env->NewStringUTF(error.c_str());
    upscaler = std::move(loaded);
    return nullptr;
}

extern "C" JNIEXPORT jint JNICALL Java_com_srdeploy_sample_Upscaler_scale(JNIEnv*, jobject) {
    return upscaler ? upscaler->facts().scale : 0;
}

extern "C" JNIEXPORT jboolean JNICALL Java_com_srdeploy_sample_Upscaler_onVulkan(JNIEnv*, jobject) {
    return upscaler && upscaler->on_vulkan();
}

// ``input`` w×h and ``output`` (scale·w)×(scale·h), both ARGB_8888; the output is opaque.
extern "C" JNIEXPORT jboolean JNICALL Java_com_srdeploy_sample_Upscaler_upscale(JNIEnv* env, jobject, jobject input,
                                                                               jobject output, jint tile) {
    AndroidBitmapInfo in_info, out_info;
    if (!upscaler || AndroidBitmap_getInfo(env, input, &in_info) < 0 || AndroidBitmap_getInfo(env, output, &out_info) < 0
        || in_info.format != ANDROID_BITMAP_FORMAT_RGBA_8888 || out_info.format != ANDROID_BITMAP_FORMAT_RGBA_8888)
        return JNI_FALSE;
    const int w = static_cast<int>(in_info.width), h = static_cast<int>(in_info.height), s = upscaler->facts().scale;
    if (static_cast<int>(out_info.width) != w * s || static_cast<int>(out_info.height) != h * s) return JNI_FALSE;
    std::vector<unsigned char> rgb(static_cast<size_t>(w) * h * 3);
    void* pixels = nullptr;
    if (AndroidBitmap_lockPixels(env, input, &pixels) < 0) return JNI_FALSE;
    for (int y = 0; y < h; y++) {
        const auto* row = static_cast<const unsigned char*>(pixels) + static_cast<size_t>(y) * in_info.stride;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = row[x * 4 + c];
    }
    AndroidBitmap_unlockPixels(env, input);
    std::vector<unsigned char> out;
    try {
        out = upscaler->upscale(rgb.data(), w, h, tile);
    } catch (const std::exception&) {  // a graph run by ExecuTorchRunner failed: its exception is pending in Kotlin
        return JNI_FALSE;
    }
    if (AndroidBitmap_lockPixels(env, output, &pixels) < 0) return JNI_FALSE;
    for (int y = 0; y < h * s; y++) {
        auto* row = static_cast<unsigned char*>(pixels) + static_cast<size_t>(y) * out_info.stride;
        for (int x = 0; x < w * s; x++) {
            for (int c = 0; c < 3; c++) row[x * 4 + c] = out[(static_cast<size_t>(y) * w * s + x) * 3 + c];
            row[x * 4 + 3] = 255;
        }
    }
    AndroidBitmap_unlockPixels(env, output);
    return JNI_TRUE;
}
